//! Go `regexp` (RE2 syntax) as far as Corefiles use it: literals, `.`,
//! classes (`[^.]`, `[a-z0-9-]`, `\d\w\s`), groups (capturing, `(?:`,
//! named), alternation, `* + ? {n} {n,} {n,m}` (greedy or lazy), `^ $ \A \z`.
//! Matching backtracks in priority order, which gives Go's leftmost-first
//! submatches. Names are short, so backtracking stays cheap.

#[derive(Debug)]
enum Node {
    Empty,
    Lit(char),
    Any,
    Class(Vec<(char, char)>, bool),
    Start,
    End,
    Group(Box<Node>, Option<usize>),
    Cat(Vec<Node>),
    Alt(Vec<Node>),
    Rep(Box<Node>, u32, Option<u32>, bool),
}

#[derive(Debug)]
pub struct Regex {
    node: Node,
    groups: usize,
}

type Caps = Vec<Option<(usize, usize)>>;
/// An escape as a node, and as class ranges with their negation.
type Escape = (Node, Vec<(char, char)>, bool);

struct Parser<'a> {
    chars: &'a [char],
    i: usize,
    groups: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }
    fn alt(&mut self) -> Result<Node, String> {
        let mut alts = vec![self.cat()?];
        while self.peek() == Some('|') {
            self.i += 1;
            alts.push(self.cat()?);
        }
        Ok(if alts.len() == 1 {
            alts.pop().unwrap()
        } else {
            Node::Alt(alts)
        })
    }
    fn cat(&mut self) -> Result<Node, String> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            items.push(self.quantified(atom)?);
        }
        Ok(match items.len() {
            0 => Node::Empty,
            1 => items.pop().unwrap(),
            _ => Node::Cat(items),
        })
    }
    fn number(&mut self) -> Option<u32> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.chars[start..self.i]
            .iter()
            .collect::<String>()
            .parse()
            .ok()
    }
    /// `{n}`, `{n,}`, `{n,m}`; anything else after `{` is a literal `{`.
    fn braces(&mut self) -> Option<(u32, Option<u32>)> {
        let save = self.i;
        self.i += 1;
        let result = (|| {
            let min = self.number()?;
            let max = if self.peek() == Some(',') {
                self.i += 1;
                if self.peek() == Some('}') {
                    None
                } else {
                    Some(self.number()?)
                }
            } else {
                Some(min)
            };
            (self.peek() == Some('}')).then(|| {
                self.i += 1;
                (min, max)
            })
        })();
        if result.is_none() {
            self.i = save;
        }
        result
    }
    fn quantified(&mut self, atom: Node) -> Result<Node, String> {
        let (min, max) = match self.peek() {
            Some('*') => {
                self.i += 1;
                (0, None)
            }
            Some('+') => {
                self.i += 1;
                (1, None)
            }
            Some('?') => {
                self.i += 1;
                (0, Some(1))
            }
            Some('{') => match self.braces() {
                Some(q) => q,
                None => return Ok(atom),
            },
            _ => return Ok(atom),
        };
        if max.is_some_and(|m| m < min) || min > 1000 {
            return Err("bad repeat count".into());
        }
        let greedy = if self.peek() == Some('?') {
            self.i += 1;
            false
        } else {
            true
        };
        Ok(Node::Rep(Box::new(atom), min, max, greedy))
    }
    fn atom(&mut self) -> Result<Node, String> {
        let c = self.peek().ok_or("unexpected end")?;
        self.i += 1;
        Ok(match c {
            '.' => Node::Any,
            '^' => Node::Start,
            '$' => Node::End,
            '(' => {
                let capture = if self.peek() == Some('?') {
                    self.i += 1;
                    match self.peek() {
                        Some(':') => {
                            self.i += 1;
                            None
                        }
                        Some('P') | Some('<') => {
                            while self.peek().is_some_and(|c| c != '>') {
                                self.i += 1;
                            }
                            self.i += 1;
                            self.groups += 1;
                            Some(self.groups)
                        }
                        _ => return Err("flags are not modelled".into()),
                    }
                } else {
                    self.groups += 1;
                    Some(self.groups)
                };
                let inner = self.alt()?;
                if self.peek() != Some(')') {
                    return Err("missing )".into());
                }
                self.i += 1;
                Node::Group(Box::new(inner), capture)
            }
            '[' => self.class()?,
            '\\' => self.escape(false)?.0,
            '*' | '+' | '?' | ')' => return Err(format!("unexpected {c:?}")),
            c => Node::Lit(c),
        })
    }
    /// An escape after `\`; inside a class, returns its ranges.
    fn escape(&mut self, in_class: bool) -> Result<Escape, String> {
        let c = self.peek().ok_or("trailing backslash")?;
        self.i += 1;
        let digit = vec![('0', '9')];
        let word = vec![('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')];
        let space = vec![('\t', '\n'), ('\x0c', '\r'), (' ', ' ')];
        let (ranges, negated) = match c {
            'd' => (digit, false),
            'D' => (digit, true),
            'w' => (word, false),
            'W' => (word, true),
            's' => (space, false),
            'S' => (space, true),
            'A' if !in_class => return Ok((Node::Start, vec![], false)),
            'z' if !in_class => return Ok((Node::End, vec![], false)),
            'n' => (vec![('\n', '\n')], false),
            't' => (vec![('\t', '\t')], false),
            c if c.is_ascii_punctuation() => (vec![(c, c)], false),
            c => return Err(format!("escape \\{c} is not modelled")),
        };
        let node = if ranges.len() == 1 && ranges[0].0 == ranges[0].1 && !negated {
            Node::Lit(ranges[0].0)
        } else {
            Node::Class(ranges.clone(), negated)
        };
        Ok((node, ranges, negated))
    }
    fn class(&mut self) -> Result<Node, String> {
        let negated = self.peek() == Some('^');
        if negated {
            self.i += 1;
        }
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let c = self.peek().ok_or("missing ]")?;
            if c == ']' && !first {
                self.i += 1;
                break;
            }
            first = false;
            self.i += 1;
            let lo = if c == '\\' {
                let (_, r, neg) = self.escape(true)?;
                if neg || r.len() != 1 || r[0].0 != r[0].1 {
                    if neg {
                        return Err("negated escape in a class is not modelled".into());
                    }
                    ranges.extend(r);
                    continue;
                }
                r[0].0
            } else {
                c
            };
            if self.peek() == Some('-') && self.chars.get(self.i + 1).is_some_and(|n| *n != ']') {
                self.i += 1;
                let mut hi = self.peek().ok_or("missing ]")?;
                self.i += 1;
                if hi == '\\' {
                    hi = self.peek().ok_or("missing ]")?;
                    self.i += 1;
                }
                ranges.push((lo, hi));
            } else {
                ranges.push((lo, lo));
            }
        }
        Ok(Node::Class(ranges, negated))
    }
}

impl Regex {
    pub fn new(pattern: &str) -> Result<Regex, String> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut p = Parser {
            chars: &chars,
            i: 0,
            groups: 0,
        };
        let node = p.alt()?;
        if p.i != chars.len() {
            return Err(format!("unexpected {:?} in regex {pattern:?}", chars[p.i]));
        }
        Ok(Regex {
            node,
            groups: p.groups,
        })
    }

    pub fn is_match(&self, s: &str) -> bool {
        self.captures(s).is_some()
    }

    /// Group 0 and every group, leftmost-first, as Go's FindStringSubmatch.
    pub fn captures(&self, s: &str) -> Option<Vec<Option<String>>> {
        let chars: Vec<char> = s.chars().collect();
        for start in 0..=chars.len() {
            let mut caps: Caps = vec![None; self.groups + 1];
            let mut end = None;
            if self.m(&self.node, &chars, start, &mut caps, &mut |j, _| {
                end = Some(j);
                true
            }) {
                caps[0] = Some((start, end.unwrap_or(start)));
                return Some(
                    caps.iter()
                        .map(|c| c.map(|(a, b)| chars[a..b].iter().collect()))
                        .collect(),
                );
            }
        }
        None
    }

    fn m(
        &self,
        n: &Node,
        s: &[char],
        i: usize,
        caps: &mut Caps,
        k: &mut dyn FnMut(usize, &mut Caps) -> bool,
    ) -> bool {
        match n {
            Node::Empty => k(i, caps),
            Node::Lit(c) => i < s.len() && s[i] == *c && k(i + 1, caps),
            Node::Any => i < s.len() && s[i] != '\n' && k(i + 1, caps),
            Node::Class(ranges, negated) => {
                i < s.len()
                    && ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&s[i])) != *negated
                    && k(i + 1, caps)
            }
            Node::Start => i == 0 && k(i, caps),
            Node::End => i == s.len() && k(i, caps),
            Node::Group(inner, None) => self.m(inner, s, i, caps, k),
            Node::Group(inner, Some(g)) => {
                let g = *g;
                let old = caps[g];
                let ok = self.m(inner, s, i, caps, &mut |j, caps| {
                    let saved = caps[g];
                    caps[g] = Some((i, j));
                    if k(j, caps) {
                        return true;
                    }
                    caps[g] = saved;
                    false
                });
                if !ok {
                    caps[g] = old;
                }
                ok
            }
            Node::Cat(items) => self.cat(items, s, i, caps, k),
            Node::Alt(alts) => {
                for a in alts {
                    if self.m(a, s, i, caps, k) {
                        return true;
                    }
                }
                false
            }
            Node::Rep(inner, min, max, greedy) => {
                self.rep(inner, *min, *max, *greedy, 0, s, i, caps, k)
            }
        }
    }

    fn cat(
        &self,
        items: &[Node],
        s: &[char],
        i: usize,
        caps: &mut Caps,
        k: &mut dyn FnMut(usize, &mut Caps) -> bool,
    ) -> bool {
        match items.split_first() {
            None => k(i, caps),
            Some((first, rest)) => self.m(first, s, i, caps, &mut |j, caps| {
                self.cat(rest, s, j, caps, k)
            }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn rep(
        &self,
        inner: &Node,
        min: u32,
        max: Option<u32>,
        greedy: bool,
        count: u32,
        s: &[char],
        i: usize,
        caps: &mut Caps,
        k: &mut dyn FnMut(usize, &mut Caps) -> bool,
    ) -> bool {
        let can_more = max.is_none_or(|m| count < m);
        let more = |caps: &mut Caps, k: &mut dyn FnMut(usize, &mut Caps) -> bool| {
            can_more
                && self.m(inner, s, i, caps, &mut |j, caps| {
                    // An empty iteration past the minimum would loop forever.
                    if j == i && count >= min {
                        return false;
                    }
                    self.rep(inner, min, max, greedy, count + 1, s, j, caps, k)
                })
        };
        if count < min {
            return more(caps, k);
        }
        // Same calls, other order: which is tried first is the point.
        #[allow(clippy::if_same_then_else)]
        if greedy {
            more(caps, k) || k(i, caps)
        } else {
            k(i, caps) || more(caps, k)
        }
    }
}

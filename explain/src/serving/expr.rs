//! The `view` plugin's expressions (expr-lang), as far as they route by name
//! and type: `name() matches 'RE'`, `name() == '...'`, `type() == 'A'`,
//! `type() in ['A', 'AAAA']`, joined with `&&`/`and`, `||`/`or`, `!`/`not`
//! and parentheses.

use super::{QType, regexp};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    And,
    Or,
    Not,
    Eq,
    Ne,
    Matches,
    In,
}

fn lex(text: &str) -> Option<Vec<Tok>> {
    let chars: Vec<char> = text.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' => i += 1,
            '(' | ')' | '[' | ']' | ',' => {
                toks.push(match c {
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    '[' => Tok::LBracket,
                    ']' => Tok::RBracket,
                    _ => Tok::Comma,
                });
                i += 1
            }
            '&' if chars.get(i + 1) == Some(&'&') => {
                toks.push(Tok::And);
                i += 2
            }
            '|' if chars.get(i + 1) == Some(&'|') => {
                toks.push(Tok::Or);
                i += 2
            }
            '=' if chars.get(i + 1) == Some(&'=') => {
                toks.push(Tok::Eq);
                i += 2
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                toks.push(Tok::Ne);
                i += 2
            }
            '!' => {
                toks.push(Tok::Not);
                i += 1
            }
            '\'' | '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i)? {
                        '\\' => {
                            s.push(*chars.get(i + 1)?);
                            i += 2;
                        }
                        q if *q == c => {
                            i += 1;
                            break;
                        }
                        other => {
                            s.push(*other);
                            i += 1;
                        }
                    }
                }
                toks.push(Tok::Str(s));
            }
            c if c.is_alphanumeric() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                toks.push(match word.as_str() {
                    "and" => Tok::And,
                    "or" => Tok::Or,
                    "not" => Tok::Not,
                    "matches" => Tok::Matches,
                    "in" => Tok::In,
                    _ => Tok::Ident(word),
                });
            }
            _ => return None,
        }
    }
    Some(toks)
}

struct P<'a> {
    toks: &'a [Tok],
    i: usize,
    name: &'a str,
    qtype: QType,
}

#[derive(Debug, Clone, PartialEq)]
enum Val {
    Bool(bool),
    Str(String),
    List(Vec<String>),
}

impl P<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i)
    }
    fn eat(&mut self, t: &Tok) -> bool {
        if self.peek() == Some(t) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn or(&mut self) -> Option<bool> {
        let mut v = self.and()?;
        while self.eat(&Tok::Or) {
            let r = self.and()?;
            v = v || r;
        }
        Some(v)
    }
    fn and(&mut self) -> Option<bool> {
        let mut v = self.not()?;
        while self.eat(&Tok::And) {
            let r = self.not()?;
            v = v && r;
        }
        Some(v)
    }
    fn not(&mut self) -> Option<bool> {
        if self.eat(&Tok::Not) {
            return self.not().map(|v| !v);
        }
        self.comparison()
    }
    fn comparison(&mut self) -> Option<bool> {
        let left = self.value()?;
        let op = self.peek().cloned();
        match op {
            Some(Tok::Matches) | Some(Tok::Eq) | Some(Tok::Ne) | Some(Tok::In) => {
                self.i += 1;
                let right = self.value()?;
                match (op?, left, right) {
                    (Tok::Matches, Val::Str(s), Val::Str(r)) => {
                        Some(regexp::compile(&r).ok()?.is_match(&s))
                    }
                    (Tok::Eq, l, r) => Some(l == r),
                    (Tok::Ne, l, r) => Some(l != r),
                    (Tok::In, Val::Str(s), Val::List(l)) => Some(l.contains(&s)),
                    _ => None,
                }
            }
            _ => match left {
                Val::Bool(b) => Some(b),
                _ => None,
            },
        }
    }
    fn value(&mut self) -> Option<Val> {
        match self.peek()?.clone() {
            Tok::LParen => {
                self.i += 1;
                let v = self.or()?;
                self.eat(&Tok::RParen).then_some(Val::Bool(v))
            }
            Tok::Str(s) => {
                self.i += 1;
                Some(Val::Str(s))
            }
            Tok::LBracket => {
                self.i += 1;
                let mut items = Vec::new();
                while !self.eat(&Tok::RBracket) {
                    match self.peek()?.clone() {
                        Tok::Str(s) => items.push(s),
                        _ => return None,
                    }
                    self.i += 1;
                    self.eat(&Tok::Comma);
                }
                Some(Val::List(items))
            }
            Tok::Ident(f) => {
                self.i += 1;
                if !(self.eat(&Tok::LParen) && self.eat(&Tok::RParen)) {
                    return None;
                }
                match f.as_str() {
                    "name" => Some(Val::Str(self.name.to_string())),
                    "type" => Some(Val::Str(self.qtype.name())),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// `None` when the expression is outside what the model reads.
pub fn eval(text: &str, name: &str, qtype: QType) -> Option<bool> {
    let toks = lex(text)?;
    let mut p = P {
        toks: &toks,
        i: 0,
        name,
        qtype,
    };
    let v = p.or()?;
    (p.i == toks.len()).then_some(v)
}

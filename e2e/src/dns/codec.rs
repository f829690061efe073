//! The DNS wire format, as much of it as the harness speaks: one question,
//! A and AAAA answers, rcodes, name compression on read.
//!
//! Hand-written on purpose rather than hickory-proto: it is about 150 lines,
//! the stand-in servers must echo a query's id, opcode and RD bits and its
//! question exactly as sent (a library's message model normalises them), and
//! the e2e then checks CoreDNS with an encoder independent of any DNS stack
//! under test.

use anyhow::{Context, Result, bail};
use std::net::IpAddr;

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_REFUSED: u8 = 5;

#[derive(Clone, Debug)]
pub struct Question {
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
}

pub fn qtype_name(t: u16) -> String {
    match t {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        13 => "HINFO".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        65 => "HTTPS".into(),
        n => format!("TYPE{n}"),
    }
}

/// Reads a (possibly compressed) name at `pos`; returns it (lower-case,
/// trailing dot, "." for root) and the position after it.
fn read_name(msg: &[u8], mut pos: usize) -> Result<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    for _ in 0..128 {
        let len = *msg.get(pos).context("short name")? as usize;
        if len & 0xC0 == 0xC0 {
            let lo = *msg.get(pos + 1).context("short pointer")? as usize;
            end.get_or_insert(pos + 2);
            pos = ((len & 0x3F) << 8) | lo;
            continue;
        }
        if len == 0 {
            let after = end.unwrap_or(pos + 1);
            let name = if labels.is_empty() {
                ".".to_string()
            } else {
                format!("{}.", labels.join("."))
            };
            return Ok((name, after));
        }
        let l = msg.get(pos + 1..pos + 1 + len).context("short label")?;
        labels.push(String::from_utf8_lossy(l).to_ascii_lowercase());
        pos += 1 + len;
    }
    bail!("name loop")
}

pub fn parse_question(msg: &[u8]) -> Result<(u16, Question)> {
    if msg.len() < 12 {
        bail!("short message");
    }
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    let qd = u16::from_be_bytes([msg[4], msg[5]]);
    if qd == 0 {
        bail!("no question");
    }
    let (name, p) = read_name(msg, 12)?;
    let qtype = u16::from_be_bytes([
        *msg.get(p).context("short")?,
        *msg.get(p + 1).context("short")?,
    ]);
    let qclass = u16::from_be_bytes([
        *msg.get(p + 2).context("short")?,
        *msg.get(p + 3).context("short")?,
    ]);
    Ok((
        id,
        Question {
            name,
            qtype,
            qclass,
        },
    ))
}

fn encode_name(name: &str, out: &mut Vec<u8>) {
    for l in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
}

pub fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, 1 question
    encode_name(name, &mut m);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m
}

pub fn build_reply(query: &[u8], q: &Question, rcode: u8, answers: &[IpAddr]) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    m.extend_from_slice(&query[0..2]);
    let rd = query[2] & 0x01;
    m.push(0x84 | rd | (query[2] & 0x78)); // QR, AA, opcode, RD
    m.push(0x80 | (rcode & 0x0F)); // RA
    m.extend_from_slice(&[0, 1]);
    m.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    encode_name(&q.name, &mut m);
    m.extend_from_slice(&q.qtype.to_be_bytes());
    m.extend_from_slice(&q.qclass.to_be_bytes());
    for a in answers {
        m.extend_from_slice(&[0xC0, 0x0C]);
        let (rtype, data) = match a {
            IpAddr::V4(v4) => (TYPE_A, v4.octets().to_vec()),
            IpAddr::V6(v6) => (TYPE_AAAA, v6.octets().to_vec()),
        };
        m.extend_from_slice(&rtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes()); // IN
        m.extend_from_slice(&30u32.to_be_bytes()); // TTL
        m.extend_from_slice(&(data.len() as u16).to_be_bytes());
        m.extend_from_slice(&data);
    }
    m
}

/// Parsed reply: rcode and the A/AAAA addresses in the answer section.
#[derive(Clone, Debug)]
pub struct Reply {
    pub rcode: u8,
    pub question: String,
    pub addrs: Vec<IpAddr>,
    pub answer_names: Vec<String>,
}

impl Reply {
    /// rcode and sorted addresses: what "resolves exactly as before" compares.
    pub fn answer(&self) -> (u8, Vec<IpAddr>) {
        let mut a = self.addrs.clone();
        a.sort();
        (self.rcode, a)
    }
}

pub fn parse_reply(msg: &[u8]) -> Result<Reply> {
    let (_, q) = parse_question(msg)?;
    let rcode = msg[3] & 0x0F;
    let an = u16::from_be_bytes([msg[6], msg[7]]) as usize;
    let (_, mut p) = read_name(msg, 12)?;
    p += 4;
    let mut addrs = Vec::new();
    let mut answer_names = Vec::new();
    for _ in 0..an {
        let (n, np) = read_name(msg, p)?;
        let rr = msg.get(np..np + 10).context("short rr")?;
        let t = u16::from_be_bytes([rr[0], rr[1]]);
        let len = u16::from_be_bytes([rr[8], rr[9]]) as usize;
        let data = msg.get(np + 10..np + 10 + len).context("short rdata")?;
        match (t, len) {
            (TYPE_A, 4) => addrs.push(IpAddr::from(<[u8; 4]>::try_from(data).unwrap())),
            (TYPE_AAAA, 16) => addrs.push(IpAddr::from(<[u8; 16]>::try_from(data).unwrap())),
            _ => {}
        }
        answer_names.push(n);
        p = np + 10 + len;
    }
    Ok(Reply {
        rcode,
        question: q.name,
        addrs,
        answer_names,
    })
}

/// Lower case with a trailing dot, as names are compared and logged.
pub fn fqdn(n: &str) -> String {
    let n = n.trim().to_ascii_lowercase();
    if n.ends_with('.') { n } else { format!("{n}.") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_to_a_query_parses_back() {
        let q = build_query(7, "Frigate.Example.", TYPE_A);
        let (id, question) = parse_question(&q).unwrap();
        assert_eq!((id, question.name.as_str()), (7, "frigate.example."));
        let ips: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
        let r = parse_reply(&build_reply(&q, &question, RCODE_NOERROR, &ips)).unwrap();
        assert_eq!(r.rcode, RCODE_NOERROR);
        assert_eq!(r.question, "frigate.example.");
        assert_eq!(r.addrs, ips);
        assert_eq!(r.answer_names, vec!["frigate.example.", "frigate.example."]);
        let nx = parse_reply(&build_reply(&q, &question, RCODE_NXDOMAIN, &[])).unwrap();
        assert_eq!(nx.answer(), (RCODE_NXDOMAIN, vec![]));
    }
}

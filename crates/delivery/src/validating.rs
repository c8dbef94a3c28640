//! Questions to the DNSSEC-validating resolver of `[dns] trust_ad`, whose
//! answers we read with their AD bit: DANE believes a TLSA RRset, and an
//! MX RRset that leads to TLSA lookups, only when the resolver says it
//! validated them (RFC 7672 §2.2, RFC 6840 §5.7). hickory's stub resolver
//! neither asks for nor keeps that bit, so these queries are made here.

use portcullis_dns::hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, Query};
use portcullis_dns::hickory_resolver::proto::rr::{Name, RecordType};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why the validating resolver gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    #[error("{0} is not a domain name")]
    BadName(String),
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Io(String),
}

/// Ask `resolver` for `name`'s `rtype` records with DO and AD set, over
/// UDP, and over TCP when the answer did not fit (RFC 7766 §5).
pub async fn ask(
    resolver: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> Result<Message, AskError> {
    // An internationalized domain is asked for by its A-labels.
    let fqdn = format!("{}.", name.trim_end_matches('.'));
    let qname = Name::from_utf8(&fqdn).map_err(|_| AskError::BadName(name.to_owned()))?;
    let (id, bytes) = question(qname, rtype)?;
    let exchange = async {
        let reply = over_udp(resolver, id, &bytes).await?;
        if reply.metadata.truncation {
            return over_tcp(resolver, id, &bytes).await;
        }
        Ok(reply)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| AskError::Timeout)?
}

fn question(qname: Name, rtype: RecordType) -> Result<(u16, Vec<u8>), AskError> {
    let id = rand_id();
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    // RFC 6840 §5.7: ask for the AD bit; DO so the resolver validates.
    msg.metadata.authentic_data = true;
    let mut edns = Edns::new();
    edns.set_dnssec_ok(true);
    edns.set_max_payload(1232);
    msg.set_edns(edns);
    msg.add_query(Query::query(qname, rtype));
    let bytes = msg.to_vec().map_err(|e| AskError::Io(e.to_string()))?;
    Ok((id, bytes))
}

fn io(e: impl std::fmt::Display) -> AskError {
    AskError::Io(e.to_string())
}

async fn over_udp(resolver: SocketAddr, id: u16, bytes: &[u8]) -> Result<Message, AskError> {
    let bind: SocketAddr = if resolver.is_ipv6() {
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0))
    } else {
        SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0))
    };
    let sock = tokio::net::UdpSocket::bind(bind).await.map_err(io)?;
    sock.send_to(bytes, resolver).await.map_err(io)?;
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = sock.recv_from(&mut buf).await.map_err(io)?;
        // Only the resolver's answer to this question counts.
        match Message::from_vec(&buf[..n]) {
            Ok(reply) if from == resolver && reply.metadata.id == id => return Ok(reply),
            _ => continue,
        }
    }
}

async fn over_tcp(resolver: SocketAddr, id: u16, bytes: &[u8]) -> Result<Message, AskError> {
    let mut stream = tokio::net::TcpStream::connect(resolver).await.map_err(io)?;
    let len = u16::try_from(bytes.len()).map_err(io)?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.map_err(io)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.map_err(io)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await.map_err(io)?;
    let reply = Message::from_vec(&buf).map_err(io)?;
    if reply.metadata.id != id {
        return Err(AskError::Io(
            "the answer over TCP is for another question".into(),
        ));
    }
    Ok(reply)
}

fn rand_id() -> u16 {
    let mut b = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u16::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resolver on loopback that answers one question with `reply`
    /// (its id made the question's) over UDP, truncated or not.
    async fn one_answer(mut reply: Message) -> SocketAddr {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let (n, from) = sock.recv_from(&mut buf).await.unwrap();
            let q = Message::from_vec(&buf[..n]).unwrap();
            reply.metadata.id = q.metadata.id;
            sock.send_to(&reply.to_vec().unwrap(), from).await.unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn the_ad_bit_of_the_answer_is_kept() {
        let mut reply = Message::new(0, MessageType::Response, OpCode::Query);
        reply.metadata.authentic_data = true;
        let resolver = one_answer(reply).await;
        let got = ask(
            resolver,
            "example.test",
            RecordType::MX,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert!(got.metadata.authentic_data);
    }

    #[tokio::test]
    async fn a_truncated_answer_is_asked_again_over_tcp() {
        let mut truncated = Message::new(0, MessageType::Response, OpCode::Query);
        truncated.metadata.truncation = true;
        let resolver = one_answer(truncated).await;
        let tcp = tokio::net::TcpListener::bind(resolver).await.unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = tcp.accept().await.unwrap();
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await.unwrap();
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut buf).await.unwrap();
            let q = Message::from_vec(&buf).unwrap();
            let mut full = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
            full.metadata.authentic_data = true;
            let bytes = full.to_vec().unwrap();
            let mut framed = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
            framed.extend_from_slice(&bytes);
            stream.write_all(&framed).await.unwrap();
        });
        let got = ask(
            resolver,
            "example.test",
            RecordType::MX,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert!(!got.metadata.truncation && got.metadata.authentic_data);
    }

    #[tokio::test]
    async fn a_silent_resolver_times_out() {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let resolver = sock.local_addr().unwrap();
        let got = ask(
            resolver,
            "example.test",
            RecordType::MX,
            Duration::from_millis(50),
        )
        .await;
        assert_eq!(got.unwrap_err(), AskError::Timeout);
    }
}

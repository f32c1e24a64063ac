#![allow(dead_code)]
//! A Produce request written by hand (Kafka protocol, Produce v3 with one
//! record batch v2), for what no well-behaved client sends: a batch whose
//! compressed payload is corrupt. The broker stores it as given; the
//! consumer under test has to decode it.

use std::io::{Read, Write};
use std::net::TcpStream;

/// CRC-32C (Castagnoli), as record batches carry it.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A record batch (magic 2) of `count` records whose (compressed) records
/// section is `records`, compression codec `codec` (4 = zstd).
pub fn record_batch(codec: i16, count: i32, timestamp_ms: i64, records: &[u8]) -> Vec<u8> {
    // From attributes to the end: what the CRC covers.
    let mut tail = Vec::new();
    tail.extend_from_slice(&codec.to_be_bytes()); // attributes
    tail.extend_from_slice(&(count - 1).to_be_bytes()); // last offset delta
    tail.extend_from_slice(&timestamp_ms.to_be_bytes()); // base timestamp
    tail.extend_from_slice(&timestamp_ms.to_be_bytes()); // max timestamp
    tail.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    tail.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    tail.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    tail.extend_from_slice(&count.to_be_bytes());
    tail.extend_from_slice(records);
    let mut b = Vec::new();
    b.extend_from_slice(&0i64.to_be_bytes()); // base offset (the broker assigns it)
    let length = 4 + 1 + 4 + tail.len() as i32; // leader epoch, magic, crc, tail
    b.extend_from_slice(&length.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    b.push(2); // magic
    b.extend_from_slice(&crc32c(&tail).to_be_bytes());
    b.extend_from_slice(&tail);
    b
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Sends one Produce v3 request of `batch` to `topic`/`partition` at `addr`
/// (the partition's leader) and returns the partition's error code.
pub fn produce_batch(addr: &str, topic: &str, partition: i32, batch: &[u8]) -> i16 {
    let mut body = Vec::new();
    body.extend_from_slice(&0i16.to_be_bytes()); // api key: Produce
    body.extend_from_slice(&3i16.to_be_bytes()); // api version
    body.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    string(&mut body, "skipflow-test");
    body.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id: null
    body.extend_from_slice(&1i16.to_be_bytes()); // acks
    body.extend_from_slice(&10_000i32.to_be_bytes()); // timeout
    body.extend_from_slice(&1i32.to_be_bytes()); // topics
    string(&mut body, topic);
    body.extend_from_slice(&1i32.to_be_bytes()); // partitions
    body.extend_from_slice(&partition.to_be_bytes());
    body.extend_from_slice(&(batch.len() as i32).to_be_bytes());
    body.extend_from_slice(batch);
    let mut s = TcpStream::connect(addr).expect("connecting to the broker");
    s.write_all(&(body.len() as i32).to_be_bytes()).unwrap();
    s.write_all(&body).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut resp).unwrap();
    // correlation id, topics count, topic name, partitions count, partition, error code
    let mut at = 4 + 4;
    let name_len = i16::from_be_bytes([resp[at], resp[at + 1]]) as usize;
    at += 2 + name_len + 4 + 4;
    i16::from_be_bytes([resp[at], resp[at + 1]])
}

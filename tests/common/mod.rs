#![allow(dead_code)]

pub mod cluster;
pub mod cont;
pub mod harness;
pub mod kafka;
pub mod output;
pub mod proc;
pub mod rawkafka;
pub mod reference;
pub mod s3;
pub mod tansu;
pub mod tls;

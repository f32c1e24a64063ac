#![allow(dead_code)]

pub mod harness;
pub mod output;
pub mod reference;

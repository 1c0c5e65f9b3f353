//! The tools that drive and measure the server, apart from the server's
//! own layers: the project's NFSv4 client (benches, `aja`, protocol-level
//! tests; a tool, not a witness of correctness), the AJA-style stream
//! runner behind `markbase-nfs aja`, and the witness of machine stalls its
//! figures are read against. They use the server's public surface only.

pub mod aja;
pub mod client;
pub mod stalls;

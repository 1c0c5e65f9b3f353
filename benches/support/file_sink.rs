//! The ceiling baseline: the same bytes over loopback TCP into a file in
//! the same folder, with no protocol at all. A receiver thread per
//! connection writes every byte it gets into a new file, as the fastest
//! server could: on Linux by `splice` (socket -> pipe -> page cache, one
//! copy), elsewhere by `recv` into a buffer and `pwrite`. The sender copies
//! its 1 MiB chunks into the socket like the bench's NFS client. No NFS
//! server can write faster than this receiver, so it tells how much of the
//! gap between the NFS stream and local pwrite is the loopback transport
//! itself.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How the receiver moves bytes from the socket into the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receive {
    /// `recv` into a 1 MiB buffer, then `pwrite` it (two copies).
    Copy,
    /// socket -> pipe -> file with `splice` (one copy; Linux).
    Splice,
}

impl Receive {
    /// How the receiver writes, for the bench's labels.
    pub fn label(self) -> &'static str {
        match self {
            Receive::Copy => "recv + pwrite",
            Receive::Splice => "splice",
        }
    }
}

/// A listening receiver; each connection streams `total` bytes per round
/// into a fresh file under `dir` and answers one byte when they are all
/// in the page cache.
pub struct FileSink {
    addr: SocketAddr,
}

impl FileSink {
    pub fn start(dir: PathBuf, total: u64, chunk: usize, how: Receive) -> FileSink {
        std::fs::create_dir_all(&dir).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for (k, s) in listener.incoming().enumerate() {
                let Ok(s) = s else { break };
                let dir = dir.clone();
                // On an error the socket closes, so the sender fails too
                // instead of waiting for an answer; this says why.
                std::thread::spawn(move || {
                    if let Err(e) = receive_rounds(s, &dir, k, total, chunk, how) {
                        eprintln!("file sink ({}): {e}", how.label());
                    }
                });
            }
        });
        FileSink { addr }
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }
}

/// Sends `total` bytes in `chunk`-sized writes and waits for the sink's
/// answer: the time until every byte is in the receiver's file.
pub fn send_round(s: &mut TcpStream, chunk: &[u8], total: u64) -> Duration {
    let t = Instant::now();
    for _ in 0..total / chunk.len() as u64 {
        s.write_all(chunk).unwrap();
    }
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).unwrap();
    t.elapsed()
}

fn receive_rounds(
    mut s: TcpStream,
    dir: &std::path::Path,
    conn: usize,
    total: u64,
    chunk: usize,
    how: Receive,
) -> io::Result<()> {
    let mut buf = vec![0u8; chunk];
    #[cfg(target_os = "linux")]
    let pipe = markbase_nfs::pipe::Pipe::with_capacity(chunk)?;
    for round in 0.. {
        // The sender closing between rounds is the end, not an error.
        if s.peek(&mut [0u8; 1])? == 0 {
            return Ok(());
        }
        let path = dir.join(format!("sink{conn}-{round}.bin"));
        let file = File::create(&path)?;
        let mut at = 0u64;
        while at < total {
            let want = chunk.min((total - at) as usize);
            match how {
                Receive::Copy => {
                    s.read_exact(&mut buf[..want])?;
                    file.write_all_at(&buf[..want], at)?;
                }
                #[cfg(target_os = "linux")]
                Receive::Splice => splice_chunk(&s, &pipe, &file, at, want)?,
                #[cfg(not(target_os = "linux"))]
                Receive::Splice => return Err(io::ErrorKind::Unsupported.into()),
            }
            at += want as u64;
        }
        s.write_all(b"k")?;
        // Outside the sender's timing, like the NFS bench's REMOVE.
        drop(file);
        let _ = std::fs::remove_file(&path);
    }
    Ok(())
}

/// Fills the pipe with `len` bytes from the socket (references to the
/// received pages), then splices them into the file at `at`.
#[cfg(target_os = "linux")]
fn splice_chunk(
    s: &TcpStream,
    pipe: &markbase_nfs::pipe::Pipe,
    file: &File,
    at: u64,
    len: usize,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = s.as_raw_fd();
    // Bytes taken from the socket into the pipe, and those of them already
    // in the file.
    let (mut taken, mut written) = (0, 0);
    while taken < len {
        match pipe.splice_from(fd, len - taken) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => taken += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if markbase_nfs::pipe::bytes_readable(fd)? > 0 {
                    // The socket has data, so the pipe is full (received
                    // in small pieces): empty it into the file.
                    pipe.write_to(file, at + written as u64, taken - written)?;
                    written = taken;
                } else {
                    markbase_nfs::pipe::wait_readable(fd)?;
                }
            }
            Err(e) => return Err(e),
        }
    }
    pipe.write_to(file, at + written as u64, taken - written)
}

//! Kernel pipes as carriers of WRITE payloads that never enter user space.
//!
//! On Linux a WRITE's data can be `splice`d from the socket into a pipe
//! (the kernel hands over references to the received pages, no copy) and
//! later from the pipe into the file (one copy, into the page cache) — one
//! CPU copy per byte instead of two (receive buffer, then `pwrite`). On
//! other systems pipes are only drained with `read` (the transport never
//! fills one there, see `net::connection`), so the code builds everywhere.

use std::fs::File;
use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::FromRawFd;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
#[cfg(not(target_os = "linux"))]
use std::os::unix::fs::FileExt;

/// One pipe and how much it can hold.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

fn cvt(r: libc::ssize_t) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

impl Pipe {
    /// A pipe that holds at least `capacity` bytes of full pages. Fails
    /// when the system's pipe limits (`/proc/sys/fs/pipe-max-size`, the
    /// per-user `pipe-user-pages-soft`) refuse the size; callers then copy.
    #[cfg(target_os = "linux")]
    pub fn with_capacity(capacity: usize) -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: fds has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and ours.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ takes an int size and touches no memory.
        let got = unsafe {
            libc::fcntl(
                write.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                capacity as libc::c_int,
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Pipe {
            read,
            write,
            capacity: got as usize,
        })
    }

    /// Pipes carry payloads only where `splice` exists.
    #[cfg(not(target_os = "linux"))]
    pub fn with_capacity(_capacity: usize) -> io::Result<Pipe> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Bytes the pipe holds when every buffer is a full page.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes waiting in the pipe.
    pub fn queued(&self) -> io::Result<usize> {
        bytes_readable(self.read.as_raw_fd())
    }

    /// Moves up to `len` bytes from a socket into the pipe without copying
    /// them (the pipe takes references to the received pages). Never
    /// blocks: `WouldBlock` means the socket had nothing or the pipe is
    /// full; [`bytes_readable`] on the socket tells which.
    #[cfg(target_os = "linux")]
    pub fn splice_from(&self, socket: RawFd, len: usize) -> io::Result<usize> {
        // SAFETY: plain descriptors, no offsets (both ends are streams).
        cvt(unsafe {
            libc::splice(
                socket,
                std::ptr::null_mut(),
                self.write.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        })
    }

    #[cfg(not(target_os = "linux"))]
    pub fn splice_from(&self, _socket: RawFd, _len: usize) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Appends bytes already in user space (the part of a payload that
    /// arrived with its header). Fails with `WouldBlock` when full.
    pub fn push(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            // SAFETY: data is a valid slice for the length given.
            let n = cvt(unsafe {
                libc::write(self.write.as_raw_fd(), data.as_ptr().cast(), data.len())
            })?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Moves everything queued back into user space, appended to `out`:
    /// the way out when a payload did not fit and must be copied after all.
    pub fn drain_into(&self, out: &mut Vec<u8>) -> io::Result<()> {
        // Only the rare path where a payload could not be spliced comes
        // here: zero-filling before the read costs nothing worth an unsafe
        // read into spare capacity.
        let at = out.len();
        out.resize(at + self.queued()?, 0);
        self.read_exact(&mut out[at..])
    }

    /// Sends `data` to a blocking stream socket through the pipe with no
    /// CPU copy: `vmsplice` lends the pages of `data` to the pipe and
    /// `splice` hands them to the socket. The kernel keeps referring to
    /// those pages until the receiver has consumed them, so the caller must
    /// leave `data` unchanged (and allocated) until the peer has answered
    /// for it. Used by the project's own client so that, over loopback, the
    /// client's copy does not eat the CPU the server is measured on.
    #[cfg(target_os = "linux")]
    pub fn send_lent(&self, socket: RawFd, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let iov = libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            };
            // SAFETY: one iovec describing `data`; without SPLICE_F_GIFT
            // the kernel only reads the pages.
            let lent = cvt(unsafe { libc::vmsplice(self.write.as_raw_fd(), &iov, 1, 0) })?;
            // "More is coming" lets the socket hold a part-filled segment
            // back, for up to 200 ms if nothing follows: said only while
            // `data` has more than this lent batch.
            let more = if lent < data.len() {
                libc::SPLICE_F_MORE
            } else {
                0
            };
            let mut left = lent;
            while left > 0 {
                // SAFETY: plain descriptors, no offsets.
                match cvt(unsafe {
                    libc::splice(
                        self.read.as_raw_fd(),
                        std::ptr::null_mut(),
                        socket,
                        std::ptr::null_mut(),
                        left,
                        libc::SPLICE_F_MOVE | more,
                    )
                }) {
                    Ok(n) => left -= n,
                    // The pipe is non-blocking, which makes the socket side
                    // non-blocking too: wait for room in the socket.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_writable(socket)?,
                    Err(e) => return Err(e),
                }
            }
            data = &data[lent..];
        }
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    pub fn send_lent(&self, _socket: RawFd, _data: &[u8]) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Reads exactly `out.len()` queued bytes into `out` (a copy).
    pub fn read_exact(&self, out: &mut [u8]) -> io::Result<()> {
        let mut got = 0;
        while got < out.len() {
            // SAFETY: reading into the unfilled part of `out`.
            let n = cvt(unsafe {
                libc::read(
                    self.read.as_raw_fd(),
                    out[got..].as_mut_ptr().cast(),
                    out.len() - got,
                )
            })?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            got += n;
        }
        Ok(())
    }

    /// Writes exactly `len` queued bytes to `file` at `offset`: with
    /// `splice` on Linux (the one copy, into the page cache), elsewhere
    /// through a buffer.
    pub fn write_to(&self, file: &File, offset: u64, len: usize) -> io::Result<()> {
        let mut done = 0usize;
        while done < len {
            let n = self.splice_to(file, offset + done as u64, len - done)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("pipe ran dry after {done} of {len} payload bytes"),
                ));
            }
            done += n;
        }
        Ok(())
    }

    #[cfg(target_os = "linux")]
    fn splice_to(&self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        let mut off = offset as libc::loff_t;
        // SAFETY: `off` outlives the call; the pipe end is a stream.
        cvt(unsafe {
            libc::splice(
                self.read.as_raw_fd(),
                std::ptr::null_mut(),
                file.as_raw_fd(),
                &mut off,
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn splice_to(&self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        let mut buf = vec![0u8; len.min(1 << 20)];
        // SAFETY: reading into an initialised buffer of buf.len() bytes.
        let n =
            cvt(unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })?;
        file.write_all_at(&buf[..n], offset)?;
        Ok(n)
    }
}

/// Waits (at most 30 s, like the client's read timeout) until `fd`
/// accepts writes.
#[cfg(target_os = "linux")]
fn wait_writable(fd: RawFd) -> io::Result<()> {
    wait_for(fd, libc::POLLOUT)
}

/// Waits (at most 30 s) until `fd` has something to read, for callers
/// that splice from a socket that is otherwise blocking.
pub fn wait_readable(fd: RawFd) -> io::Result<()> {
    wait_for(fd, libc::POLLIN)
}

fn wait_for(fd: RawFd, events: libc::c_short) -> io::Result<()> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one pollfd.
    match unsafe { libc::poll(&mut p, 1, 30_000) } {
        0 => Err(io::ErrorKind::TimedOut.into()),
        n if n < 0 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    }
}

/// Bytes that can be read from a socket or pipe right now (FIONREAD).
pub fn bytes_readable(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::FileExt;

    #[test]
    fn socket_bytes_reach_the_file_through_the_pipe() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut tx = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (rx, _) = listener.accept().unwrap();
        rx.set_nonblocking(true).unwrap();
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        tx.write_all(&payload[..1000]).unwrap();
        let pipe = Pipe::with_capacity(1 << 20).unwrap();
        assert!(pipe.capacity() >= 1 << 20);
        // The head arrives in user space; the rest is spliced.
        pipe.push(&payload[..1000]).unwrap();
        let mut rx_buf = [0u8; 1000];
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!((&rx).read(&mut rx_buf).unwrap(), 1000);
        tx.write_all(&payload[1000..]).unwrap();
        let mut got = 1000;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while got < payload.len() && std::time::Instant::now() < deadline {
            match pipe.splice_from(rx.as_raw_fd(), payload.len() - got) {
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("splice: {e}"),
            }
        }
        assert_eq!(pipe.queued().unwrap(), payload.len());
        let dir = tempfile::tempdir().unwrap();
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        pipe.write_to(&file, 4096, payload.len()).unwrap();
        let mut back = vec![0u8; payload.len()];
        file.read_exact_at(&mut back, 4096).unwrap();
        assert_eq!(back, payload);
        assert_eq!(pipe.queued().unwrap(), 0);
        // Asking for more than is queued fails instead of blocking.
        assert!(pipe.write_to(&file, 0, 1).is_err());
    }

    #[test]
    fn a_pipe_gives_its_bytes_back() {
        let pipe = Pipe::with_capacity(64 << 10).unwrap();
        pipe.push(b"frame").unwrap();
        let mut out = b"head:".to_vec();
        pipe.drain_into(&mut out).unwrap();
        assert_eq!(out, b"head:frame");
        assert_eq!(pipe.queued().unwrap(), 0);
    }
}
#[cfg(all(test, target_os = "linux"))]
mod lend_tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn lent_pages_arrive_intact() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tx = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut rx, _) = listener.accept().unwrap();
        let payload: Vec<u8> = (0..(1u32 << 20) + 13).map(|i| (i % 251) as u8).collect();
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; ((1 << 20) + 13) * 5];
            rx.read_exact(&mut got).unwrap();
            got
        });
        let pipe = Pipe::with_capacity(1 << 20).unwrap();
        for _ in 0..5 {
            pipe.send_lent(tx.as_raw_fd(), &payload).unwrap();
        }
        let got = reader.join().unwrap();
        for k in 0..5 {
            assert!(got[k * payload.len()..(k + 1) * payload.len()] == payload[..]);
        }
    }
}

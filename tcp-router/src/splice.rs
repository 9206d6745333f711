//! Zero-copy forwarding between two plain TCP sockets on Linux: `splice(2)` from the source
//! socket into a pipe and from the pipe into the destination socket, so bulk data never passes
//! through user space (HAProxy's `splice-auto`, here always on for bulk directions).
//!
//! [`crate::forward`] switches a direction to a [`Pipe`] once its reads fill the copy buffer
//! (a bulk transfer); short exchanges never create one. Readiness comes from tokio's reactor:
//! the source socket's read readiness is only cleared when `splice` reports `EAGAIN` with the
//! pipe empty (with data queued, `EAGAIN` may mean the pipe's slots are full, so the pipe is
//! drained first), and the destination's write readiness when moving data out of the pipe
//! reports `EAGAIN`.
//!
//! Elsewhere [`Pipe::new`] fails and the copy stays in user space.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::net::TcpStream;

/// Requested pipe capacity.
pub const PIPE_SIZE: usize = 256 * 1024;

/// A pipe carrying one direction of a connection, and how much it holds.
#[derive(Debug)]
pub struct Pipe {
    #[cfg(target_os = "linux")]
    read: std::os::fd::OwnedFd,
    #[cfg(target_os = "linux")]
    write: std::os::fd::OwnedFd,
    size: usize,
    queued: usize,
}

#[cfg(target_os = "linux")]
mod sys {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    pub fn pipe(size: usize) -> io::Result<(OwnedFd, OwnedFd, usize)> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both are fresh descriptors we own.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let want = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
        // SAFETY: fcntl on a descriptor we own; failure leaves the default size.
        let got = unsafe {
            libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, want);
            libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        let size = usize::try_from(got)
            .ok()
            .filter(|s| *s > 0)
            .unwrap_or(64 * 1024);
        Ok((read, write, size))
    }

    pub fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
        // SAFETY: plain syscall on descriptors owned by the caller; null offsets (sockets and
        // pipes have none).
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl Pipe {
    /// A new pipe (Linux only).
    pub fn new() -> io::Result<Pipe> {
        #[cfg(target_os = "linux")]
        {
            let (read, write, size) = sys::pipe(PIPE_SIZE)?;
            Ok(Pipe {
                read,
                write,
                size,
                queued: 0,
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "splice is Linux-only",
            ))
        }
    }

    /// Moves data from `from` to `to` until `from` reaches EOF and everything is out
    /// (`Ready(Ok)`, with `read_done` set), an error, or neither side can make progress.
    #[cfg(target_os = "linux")]
    pub fn poll_forward(
        &mut self,
        cx: &mut Context<'_>,
        from: &TcpStream,
        to: &TcpStream,
        read_done: &mut bool,
        counter: &AtomicU64,
        progressed: &mut bool,
    ) -> Poll<io::Result<()>> {
        use std::os::fd::AsRawFd;
        use tokio::io::Interest;
        loop {
            let mut moved = false;
            if !*read_done && self.queued < self.size {
                match from.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        match sys::splice(
                            from.as_raw_fd(),
                            self.write.as_raw_fd(),
                            self.size - self.queued,
                        ) {
                            Ok(0) => {
                                *read_done = true;
                                moved = true;
                            }
                            Ok(n) => {
                                self.queued += n;
                                *progressed = true;
                                moved = true;
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                if self.queued == 0 {
                                    // The pipe is empty, so the socket has nothing: clear its
                                    // readiness so the next poll waits for data.
                                    let _ = from.try_io(Interest::READABLE, || {
                                        Err::<(), _>(io::ErrorKind::WouldBlock.into())
                                    });
                                    moved = true; // poll again to register the waker
                                }
                                // Otherwise the pipe's slots may be full: drain first.
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => moved = true,
                            Err(e) => return Poll::Ready(Err(e)),
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            if self.queued > 0 {
                match to.poll_write_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        match to.try_io(Interest::WRITABLE, || {
                            sys::splice(self.read.as_raw_fd(), to.as_raw_fd(), self.queued)
                        }) {
                            Ok(n) => {
                                self.queued -= n.min(self.queued);
                                counter.fetch_add(n as u64, Ordering::Relaxed);
                                *progressed = true;
                                moved = true;
                            }
                            // Readiness cleared by try_io: poll again to register the waker.
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => moved = true,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => moved = true,
                            Err(e) => return Poll::Ready(Err(e)),
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            if *read_done && self.queued == 0 {
                return Poll::Ready(Ok(()));
            }
            if !moved {
                return Poll::Pending;
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn poll_forward(
        &mut self,
        _cx: &mut Context<'_>,
        _from: &TcpStream,
        _to: &TcpStream,
        _read_done: &mut bool,
        _counter: &AtomicU64,
        _progressed: &mut bool,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "splice is Linux-only",
        )))
    }

    /// Bytes in the pipe.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// The pipe's capacity.
    pub fn size(&self) -> usize {
        self.size
    }
}

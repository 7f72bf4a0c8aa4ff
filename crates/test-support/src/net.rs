//! Stand-ins for a server that stops answering, without stopping one.
//!
//! A frozen process (SIGSTOP, a VM pause) keeps its sockets: the kernel
//! still completes TCP handshakes and takes in what is sent, but nobody
//! answers. [`Silent`] is that from the start (a bound, listening socket
//! that nobody accepts from); [`FreezableProxy`] forwards to a real server
//! until frozen, then holds every byte both ways until thawed.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A listening socket on `127.0.0.1` that nobody accepts from: connections
/// complete (in the kernel's backlog) and are never answered.
pub struct Silent {
    listener: TcpListener,
}

impl Silent {
    pub fn bind() -> Silent {
        Silent { listener: TcpListener::bind("127.0.0.1:0").unwrap() }
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap()
    }
}

/// How often the proxy's threads look at the freeze and stop switches.
const TICK: Duration = Duration::from_millis(10);

/// A TCP proxy on `127.0.0.1` to `upstream` that can be frozen: while
/// frozen it accepts connections but forwards nothing, either way, holding
/// what it read until thawed. Dropping it closes every connection.
pub struct FreezableProxy {
    addr: SocketAddr,
    switches: Arc<Switches>,
    accept: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Switches {
    frozen: AtomicBool,
    stop: AtomicBool,
}

impl FreezableProxy {
    pub fn start(upstream: SocketAddr) -> FreezableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let switches = Arc::new(Switches::default());
        let on = Arc::clone(&switches);
        let accept = std::thread::spawn(move || {
            let mut pumps = Vec::new();
            for client in listener.incoming() {
                if on.stop.load(Ordering::SeqCst) {
                    break;
                }
                let (Ok(client), Ok(server)) = (client, TcpStream::connect(upstream)) else {
                    continue;
                };
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (from, to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    let on = Arc::clone(&on);
                    pumps.push(std::thread::spawn(move || pump(from, to, &on)));
                }
            }
            for p in pumps {
                let _ = p.join();
            }
        });
        FreezableProxy { addr, switches, accept: Some(accept) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on nothing more is forwarded, until [`FreezableProxy::thaw`].
    pub fn freeze(&self) {
        self.switches.frozen.store(true, Ordering::SeqCst);
    }

    pub fn thaw(&self) {
        self.switches.frozen.store(false, Ordering::SeqCst);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.switches.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then sees the stop.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Copies `from` to `to` while not frozen, until either end closes or the
/// proxy stops; then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream, on: &Switches) {
    let stopped = || on.stop.load(Ordering::SeqCst);
    let frozen = || on.frozen.load(Ordering::SeqCst);
    let _ = from.set_read_timeout(Some(TICK));
    let mut buf = vec![0u8; 64 * 1024];
    while !stopped() {
        if frozen() {
            std::thread::sleep(TICK);
            continue;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        // Read just as the freeze came: held until the thaw.
        while frozen() && !stopped() {
            std::thread::sleep(TICK);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

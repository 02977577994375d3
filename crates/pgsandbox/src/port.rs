//! Free loopback ports.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};

/// A port nobody listens on right now. Tests start clusters in parallel (and nextest runs them
/// in separate processes), so two callers may still race for the same port; the cluster start
/// retries with another port when the server cannot bind. Ports are drawn from a range spread
/// by the process id so parallel processes rarely collide at all.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let spread = (std::process::id() % 400) as u16 * 50;
    for _ in 0..2000 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 50;
        let port = 20000 + spread + offset;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    // Let the kernel choose as a last resort.
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(54329)
}

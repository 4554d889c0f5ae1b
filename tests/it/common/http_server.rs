//! A loopback HTTP/1.1 server for the fetch tests: serves byte routes (with `Range`
//! support, cut connections and failing statuses) and records every request.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How the server answers one path.
#[derive(Clone)]
pub enum Route {
    /// Serve the bytes; honour `Range: bytes=N-` with 206 (416 past the end).
    Bytes(Vec<u8>),
    /// The first request gets the headers of the full body, half of it, then a closed socket;
    /// later requests behave like `Bytes`.
    CutOnce(Vec<u8>),
    /// Serve the bytes with 200, ignoring any Range header.
    IgnoreRange(Vec<u8>),
    /// Answer 503 to the first `n` requests, then behave like `Bytes`.
    FailFirst(usize, Vec<u8>),
    Status(u16),
    /// Every request gets the headers of the full body, half of it, then a closed socket.
    AlwaysCut(Vec<u8>),
    /// `HEAD` is refused with 405; other requests behave like `Bytes`.
    NoHead(Vec<u8>),
    /// Every request gets a body without Content-Length (delimited by closing the connection,
    /// as some download hosts send it) that stops after half of the bytes.
    CutNoLength(Vec<u8>),
}

/// Every request seen: (method, path, Range header).
type Log = Arc<Mutex<Vec<(String, String, Option<String>)>>>;

/// A sequential HTTP/1.1 server on 127.0.0.1 that records (path, Range header) per request.
/// It stops after `MAX_CONNECTIONS` connections or when dropped.
pub struct Server {
    addr: SocketAddr,
    log: Log,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

const MAX_CONNECTIONS: usize = 64;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

impl Server {
    pub fn start(routes: &[(&str, Route)]) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let routes: HashMap<String, Route> = routes
            .iter()
            .map(|(p, r)| (p.to_string(), r.clone()))
            .collect();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        let handle = thread::spawn(move || {
            for stream in listener.incoming().take(MAX_CONNECTIONS) {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let _ = serve(stream, &routes, &log2);
                }
            }
        });
        Server {
            addr,
            log,
            stop,
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn requests(&self, path: &str) -> Vec<Option<String>> {
        let log = self.log.lock().expect("log lock");
        log.iter()
            .filter(|(_, p, _)| p == path)
            .map(|(_, _, r)| r.clone())
            .collect()
    }

    /// (method, Range header) of every request for `path`.
    pub fn requests_with_method(&self, path: &str) -> Vec<(String, Option<String>)> {
        let log = self.log.lock().expect("log lock");
        log.iter()
            .filter(|(_, p, _)| p == path)
            .map(|(m, _, r)| (m.clone(), r.clone()))
            .collect()
    }

    pub fn total_requests(&self) -> usize {
        self.log.lock().expect("log lock").len()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT); // wake the accept loop
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn serve(mut stream: TcpStream, routes: &HashMap<String, Route>, log: &Log) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        if stream.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let method = head.split_whitespace().next().unwrap_or("GET").to_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let range = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("range").then(|| v.trim().to_owned())
    });
    let seen = {
        let mut log = log.lock().expect("log lock");
        log.push((method.clone(), path.clone(), range.clone()));
        log.iter().filter(|(_, p, _)| *p == path).count() - 1
    };
    // `bytes=N-` or `bytes=N-M`.
    let (start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) => match r.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().ok(), b.parse::<usize>().ok()),
            None => (None, None),
        },
        None => (None, None),
    };
    let head_only = method == "HEAD";
    let (data, cut, honour_range) = match routes.get(&path) {
        None => return respond(&mut stream, 404, &[], b"no such route"),
        Some(Route::Status(code)) => return respond(&mut stream, *code, &[], b"status route"),
        Some(Route::FailFirst(n, _)) if seen < *n => {
            return respond(&mut stream, 503, &[], b"try later")
        }
        Some(Route::NoHead(_)) if head_only => return respond(&mut stream, 405, &[], b""),
        Some(Route::Bytes(d) | Route::FailFirst(_, d) | Route::NoHead(d)) => (d, false, true),
        Some(Route::CutOnce(d)) => (d, seen == 0, true),
        Some(Route::AlwaysCut(d)) => (d, true, false),
        Some(Route::IgnoreRange(d)) => (d, false, false),
        Some(Route::CutNoLength(d)) => {
            stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
            if !head_only {
                stream.write_all(&d[..d.len() / 2])?;
            }
            stream.flush()?;
            return stream.shutdown(std::net::Shutdown::Both);
        }
    };
    if head_only {
        let cl = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            data.len()
        );
        stream.write_all(cl.as_bytes())?;
        return stream.flush();
    }
    match start.filter(|_| honour_range) {
        Some(s) if s >= data.len() => {
            let cr = format!("Content-Range: bytes */{}", data.len());
            respond(&mut stream, 416, &[cr], b"")
        }
        Some(s) => {
            let last = end.unwrap_or(data.len() - 1).min(data.len() - 1);
            let cr = format!("Content-Range: bytes {}-{}/{}", s, last, data.len());
            respond(&mut stream, 206, &[cr], &data[s..=last])
        }
        None if cut => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                data.len()
            )?;
            stream.write_all(&data[..data.len() / 2])?;
            stream.flush()?;
            stream.shutdown(std::net::Shutdown::Both)
        }
        None => respond(&mut stream, 200, &[], data),
    }
}

fn respond(
    stream: &mut TcpStream,
    code: u16,
    extra: &[String],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for h in extra {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

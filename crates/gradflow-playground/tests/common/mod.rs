//! A small HTTP/1.1 client over `std::net::TcpStream`, enough to test the API
//! and read server-sent events, and a server started on 127.0.0.1:0.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub use gradflow_playground::{Limits, Running, ServerOptions};

/// Start a server on a free loopback port.
pub fn server() -> Running {
    server_with(Limits::default())
}

/// Start a server with these caps.
pub fn server_with(limits: Limits) -> Running {
    gradflow_playground::start(&ServerOptions {
        host: "127.0.0.1".into(),
        port: 0,
        limits,
    })
    .expect("server starts")
}

/// A response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

fn read_chunked(r: &mut impl BufRead, out: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(false);
    }
    let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("chunk size '{line}': {e}")))?;
    if size == 0 {
        return Ok(false);
    }
    let mut chunk = vec![0u8; size + 2];
    r.read_exact(&mut chunk)?;
    out.extend_from_slice(&chunk[..size]);
    Ok(true)
}

fn read_head(r: &mut impl BufRead) -> (u16, String) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(
            r.read_line(&mut line).expect("read header") > 0,
            "connection closed in headers"
        );
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    (status, head)
}

/// Send one request (Connection: close) with an explicit Host header.
pub fn request_host(addr: SocketAddr, host: &str, method: &str, path: &str, ctype: Option<&str>, body: &[u8]) -> Resp {
    let mut s = connect(addr);
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = ctype {
        req.push_str(&format!("Content-Type: {t}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // A server may answer (e.g. 413) before reading a large body; ignore a reset while writing.
    let _ = s.write_all(body);
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r);
    let mut out = Vec::new();
    if headers.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        while read_chunked(&mut r, &mut out).unwrap_or(false) {}
    } else {
        let _ = r.read_to_end(&mut out);
    }
    Resp {
        status,
        headers,
        body: out,
    }
}

/// Send one request to the server at `addr`.
pub fn request(addr: SocketAddr, method: &str, path: &str, ctype: Option<&str>, body: &[u8]) -> Resp {
    request_host(addr, &addr.to_string(), method, path, ctype, body)
}

pub fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, None, b"")
}

pub fn post_json(addr: SocketAddr, path: &str, body: &serde_json::Value) -> Resp {
    request(
        addr,
        "POST",
        path,
        Some("application/json"),
        body.to_string().as_bytes(),
    )
}

/// Create a session with `config`; returns its id and the whole response.
pub fn create(addr: SocketAddr, config: &serde_json::Value) -> (String, serde_json::Value) {
    let r = post_json(addr, "/api/sessions", config);
    assert_eq!(r.status, 201, "{}", r.text());
    let j = r.json();
    (j["id"].as_str().unwrap().to_string(), j)
}

pub fn control(addr: SocketAddr, id: &str, action: &str) -> serde_json::Value {
    let r = post_json(
        addr,
        &format!("/api/sessions/{id}/control"),
        &serde_json::json!({ "action": action }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// An open event stream.
pub struct Events {
    r: BufReader<TcpStream>,
    buf: String,
}

impl Events {
    pub fn open(addr: SocketAddr, id: &str) -> Result<Events, Resp> {
        let mut s = connect(addr);
        write!(
            s,
            "GET /api/sessions/{id}/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let mut r = BufReader::new(s);
        let (status, headers) = read_head(&mut r);
        if status != 200 {
            let mut body = Vec::new();
            if headers.to_ascii_lowercase().contains("transfer-encoding: chunked") {
                while read_chunked(&mut r, &mut body).unwrap_or(false) {}
            } else if let Some(n) = headers.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_string())
            }) {
                let mut b = vec![0u8; n.parse().unwrap()];
                r.read_exact(&mut b).unwrap();
                body = b;
            }
            return Err(Resp { status, headers, body });
        }
        assert!(headers.to_ascii_lowercase().contains("text/event-stream"), "{headers}");
        Ok(Events { r, buf: String::new() })
    }

    /// The next event as (name, data), skipping keep-alive comments.
    pub fn next(&mut self) -> (String, String) {
        loop {
            if let Some(pos) = self.buf.find("\n\n") {
                let ev: String = self.buf.drain(..pos + 2).collect();
                let (mut name, mut data) = (String::from("message"), String::new());
                for line in ev.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() && name == "message" {
                    continue; // a comment (keep-alive)
                }
                return (name, data);
            }
            let mut bytes = Vec::new();
            assert!(
                read_chunked(&mut self.r, &mut bytes).expect("read event stream"),
                "stream ended"
            );
            self.buf.push_str(&String::from_utf8(bytes).unwrap());
        }
    }

    /// The next frame, parsed.
    pub fn frame(&mut self) -> serde_json::Value {
        loop {
            let (name, data) = self.next();
            if name == "frame" {
                return serde_json::from_str(&data).unwrap();
            }
            assert_ne!(name, "closed", "session closed");
        }
    }
}

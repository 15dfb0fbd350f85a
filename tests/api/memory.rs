//! Memory per request, measured on the real binary: many readers of an
//! article's very long comment list at once.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::{JWT_SECRET, TestApp};

const COMMENTS: i64 = 1_500;
const COMMENT_CHARS: i64 = 10_000;
const READERS: usize = 64;
const RSS_LIMIT_KIB: u64 = 200 * 1024;

/// The process's peak resident set (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM line");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmHWM in kB")
}

/// One `GET` on a new connection, read to the end; the status line and the body's length.
async fn read_all(addr: std::net::SocketAddr, path: &str) -> (String, usize, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let status = String::from_utf8_lossy(&response[..response.iter().position(|&b| b == b'\r').unwrap_or(0)]).into();
    let len = response.len();
    (status, len, response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_readers_of_fifteen_megabytes_of_comments_keep_the_server_under_200_mb() {
    let app = TestApp::new().await;
    let jake = app.register("jake").await;
    let slug = app.create_article(&jake, "Much discussed", &[]).await;
    sqlx::query(
        "INSERT INTO comments (article_id, author_id, body)
         SELECT a.id, u.id, repeat('x', $2::int) FROM articles a, users u, generate_series(1, $3::int)
         WHERE a.slug = $1 AND u.username = 'jake'",
    )
    .bind(&slug)
    .bind(COMMENT_CHARS)
    .bind(COMMENTS)
    .execute(&app.db)
    .await
    .expect("insert comments");

    let options = &app.options;
    let url = format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().expect("a database")
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut server = Server(
        Command::new(env!("CARGO_BIN_EXE_conduit"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &url)
            .env("JWT_SECRET", JWT_SECRET)
            .env("BIND_ADDR", addr.to_string())
            .env("METRICS_ADDR", "")
            .env("RATE_LIMIT", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start conduit"),
    );
    let server = &mut server.0;
    let started = Instant::now();
    while read_all_ready(addr).await.is_none() {
        assert!(server.try_wait().expect("poll").is_none(), "conduit exited during start-up");
        assert!(started.elapsed() < Duration::from_secs(60), "not ready after 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let path = format!("/api/articles/{slug}/comments");
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let path = path.clone();
            tokio::spawn(async move {
                let (status, len, _) = read_all(addr, &path).await;
                (status, len)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for reader in readers {
        answers.push(reader.await.expect("reader"));
    }
    let peak = peak_rss_kib(server.id());
    let min_len = usize::try_from(COMMENTS * COMMENT_CHARS).expect("fits");
    eprintln!("peak RSS with {READERS} readers of {} MB: {} MiB", min_len / 1_000_000, peak / 1024);
    assert!(peak < RSS_LIMIT_KIB, "peak RSS {} MiB", peak / 1024);
    for (status, len) in answers {
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(len > min_len, "{len} bytes");
    }
    let (_, _, one) = read_all(addr, &path).await;
    let body_at = one.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers") + 4;
    let body = dechunk(&one[body_at..]);
    let parsed: serde_json::Value = serde_json::from_slice(&body).expect("the streamed list is valid JSON");
    assert_eq!(parsed["comments"].as_array().map(Vec::len), Some(1_500));
}

/// The server, stopped when the test ends, whether it passes or not.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn read_all_ready(addr: std::net::SocketAddr) -> Option<()> {
    tokio::net::TcpStream::connect(addr).await.ok()?;
    let (status, _, _) = read_all(addr, "/health/ready").await;
    status.contains(" 200 ").then_some(())
}

/// The body of a `Transfer-Encoding: chunked` answer (or the body as it is).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else { return raw.to_vec() };
        let Ok(size) = usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap_or("x").trim(), 16) else {
            return raw.to_vec();
        };
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[eol + 2 + size + 2..];
    }
}

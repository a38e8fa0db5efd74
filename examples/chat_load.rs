//! Load generator of `bench/chat_fanout.sh` (issue 7): opens `--subscribers` read-only chat
//! WebSockets to one room (in batches, within a time budget), then one sender posts `--rate`
//! messages/s for `--seconds` s, each text carrying its sequence number and send time
//! (`seq=<n> t=<unix µs>`). Subscribers record receive time − send time (same host clock).
//! With `--server-pid` it also reads the server's VmRSS (before / with every connection / after
//! sending) and utime+stime over the send period from /proc, and scrapes
//! `headwater_chat_*` from `/metrics` before and after sending.
//!
//! ```sh
//! cargo run --release --example chat_load -- --addr 127.0.0.1:18090 --subscribers 10000 \
//!     --server-pid 1234
//! ```
//!
//! Prints `key=value` result lines (parsed by the script) after human-readable progress on
//! stderr. Everything is bounded in time; 127.0.0.1 only in practice.

use futures_util::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Latency histogram resolution and range: 10 µs buckets up to 10 s (+ overflow).
const BUCKET_US: u64 = 10;
const BUCKETS: usize = 1_000_000;

struct Args {
    addr: SocketAddr,
    stream: String,
    subscribers: usize,
    batch: usize,
    connect_budget: Duration,
    rate: u32,
    seconds: u32,
    drain: Duration,
    server_pid: Option<u32>,
    clk_tck: f64,
}

fn num<T: std::str::FromStr>(flag: &str, value: &str) -> T {
    value
        .parse()
        .unwrap_or_else(|_| panic!("bad value for {flag}: {value}"))
}

fn parse_args() -> Args {
    let mut args = Args {
        addr: "127.0.0.1:18090".parse().expect("addr"),
        stream: "bench".into(),
        subscribers: 10_000,
        batch: 250,
        connect_budget: Duration::from_secs(180),
        rate: 20,
        seconds: 30,
        drain: Duration::from_secs(10),
        server_pid: None,
        clk_tck: 100.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => args.addr = num(&flag, &value),
            "--stream" => args.stream = value.clone(),
            "--subscribers" => args.subscribers = num(&flag, &value),
            "--batch" => args.batch = num(&flag, &value),
            "--connect-budget" => args.connect_budget = Duration::from_secs(num(&flag, &value)),
            "--rate" => args.rate = num(&flag, &value),
            "--seconds" => args.seconds = num(&flag, &value),
            "--drain" => args.drain = Duration::from_secs(num(&flag, &value)),
            "--server-pid" => args.server_pid = Some(num(&flag, &value)),
            "--clk-tck" => args.clk_tck = num(&flag, &value),
            _ => panic!("unknown flag {flag}"),
        }
    }
    args.batch = args.batch.max(1);
    args
}

/// Counters shared by every subscriber.
struct Stats {
    /// Deliveries per message sequence number.
    received: Vec<AtomicU32>,
    /// Latency histogram (BUCKET_US wide buckets; the last one is overflow).
    hist: Vec<AtomicU32>,
    max_us: AtomicU64,
    /// Frames whose send time is in the future (clock oddities); counted, not in the histogram.
    negative: AtomicU64,
    /// Subscribers that lost their connection during the run, by reason.
    closed: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    fn record(&self, seq: usize, sent_us: u64, now_us: u64) {
        if let Some(slot) = self.received.get(seq) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
        if now_us < sent_us {
            self.negative.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let us = now_us - sent_us;
        let bucket = ((us / BUCKET_US) as usize).min(BUCKETS);
        self.hist[bucket].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    fn closed(&self, reason: String) {
        *self
            .closed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(reason)
            .or_default() += 1;
    }

    /// The q-quantile of the latency histogram, in ms (upper edge of the bucket).
    fn quantile_ms(&self, q: f64) -> f64 {
        let total: u64 = self
            .hist
            .iter()
            .map(|c| u64::from(c.load(Ordering::Relaxed)))
            .sum();
        if total == 0 {
            return f64::NAN;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, c) in self.hist.iter().enumerate() {
            seen += u64::from(c.load(Ordering::Relaxed));
            if seen >= rank {
                return ((i as u64 + 1) * BUCKET_US) as f64 / 1000.0;
            }
        }
        f64::INFINITY
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `seq=<n> t=<µs>` out of a `message` frame, without a full JSON parse.
fn parse_text(frame: &str) -> Option<(usize, u64)> {
    if !frame.starts_with("{\"type\":\"message\"") {
        return None;
    }
    let rest = &frame[frame.find("seq=")? + 4..];
    let end = rest.find(' ')?;
    let seq = rest[..end].parse().ok()?;
    let rest = rest[end..].strip_prefix(" t=")?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    Some((seq, rest[..end].parse().ok()?))
}

fn ws_config() -> WebSocketConfig {
    // Small client buffers: 10k clients with tungstenite's 128 KiB default would cost the
    // client (not the server) a lot of memory on a shared machine.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Connects and reads the `joined` frame, within 15 s.
async fn join(url: &str) -> Result<Ws, String> {
    let attempt = async {
        let (mut ws, _) =
            tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true)
                .await
                .map_err(|e| format!("connect: {e}"))?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.starts_with("{\"type\":\"joined\"") => {
                    return Ok(ws)
                }
                Some(Ok(Message::Text(t))) => return Err(format!("first frame: {t}")),
                Some(Ok(Message::Close(c))) => {
                    return Err(format!(
                        "closed at join: {:?}",
                        c.map(|c| u16::from(c.code))
                    ))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("join: {e}")),
                None => return Err("eof at join".into()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), attempt)
        .await
        .unwrap_or_else(|_| Err("join timeout (15 s)".into()))
}

async fn subscribe(
    url: String,
    stats: Arc<Stats>,
    ready: mpsc::Sender<Result<(), String>>,
    stop: CancellationToken,
) {
    let mut ws = match join(&url).await {
        Ok(ws) => {
            let _ = ready.send(Ok(())).await;
            ws
        }
        Err(e) => {
            let _ = ready.send(Err(e)).await;
            return;
        }
    };
    drop(ready);
    loop {
        let frame = tokio::select! {
            () = stop.cancelled() => break,
            frame = ws.next() => frame,
        };
        match frame {
            Some(Ok(Message::Text(text))) => {
                if let Some((seq, sent)) = parse_text(&text) {
                    stats.record(seq, sent, now_us());
                } else if text.starts_with("{\"type\":\"error\"") {
                    stats.closed(format!("error frame: {}", &text[..text.len().min(80)]));
                }
            }
            Some(Ok(Message::Close(c))) => {
                stats.closed(format!(
                    "close {:?}",
                    c.map(|c| u16::from(c.code)).unwrap_or(0)
                ));
                return;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                stats.closed(format!("error: {e}"));
                return;
            }
            None => {
                stats.closed("eof".into());
                return;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}

/// VmRSS of a process, in kB.
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// `headwater_chat_*` lines of /metrics (plain HTTP/1.1, Connection: close).
async fn scrape(addr: SocketAddr) -> String {
    let attempt = async {
        let mut tcp = TcpStream::connect(addr).await.ok()?;
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut body = Vec::new();
        tcp.read_to_end(&mut body).await.ok()?;
        Some(String::from_utf8_lossy(&body).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("headwater_chat_"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// (le, cumulative count) of the fan-out histogram plus its sum and count.
fn fanout(metrics: &str) -> (Vec<(f64, f64)>, f64, f64) {
    let mut buckets = Vec::new();
    let (mut sum, mut count) = (0.0, 0.0);
    for line in metrics.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        if let Some(rest) = name.strip_prefix("headwater_chat_fanout_duration_seconds_bucket{le=\"")
        {
            let le = rest.trim_end_matches("\"}");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::NAN)
            };
            buckets.push((le, value));
        } else if name == "headwater_chat_fanout_duration_seconds_sum" {
            sum = value;
        } else if name == "headwater_chat_fanout_duration_seconds_count" {
            count = value;
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    (buckets, sum, count)
}

/// Prometheus-style histogram_quantile over a bucket delta, in ms.
fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else {
        return f64::NAN;
    };
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, c) in buckets {
        if c >= rank {
            if le.is_infinite() {
                return prev.0 * 1000.0;
            }
            let frac = if c > prev.1 {
                (rank - prev.1) / (c - prev.1)
            } else {
                1.0
            };
            return (prev.0 + (le - prev.0) * frac) * 1000.0;
        }
        prev = (le, c);
    }
    f64::NAN
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let total = (args.rate * args.seconds) as usize;
    let stats = Arc::new(Stats {
        received: (0..total).map(|_| AtomicU32::new(0)).collect(),
        hist: (0..=BUCKETS).map(|_| AtomicU32::new(0)).collect(),
        max_us: AtomicU64::new(0),
        negative: AtomicU64::new(0),
        closed: std::sync::Mutex::default(),
    });
    let stop = CancellationToken::new();
    let base = format!("ws://{}/api/v1/streams/{}/chat", args.addr, args.stream);
    let pid = args.server_pid;
    let rss_before = pid.and_then(rss_kb);
    let metrics_before_connect = scrape(args.addr).await;

    // Subscribers, in batches.
    let started = Instant::now();
    let deadline = started + args.connect_budget;
    let mut tasks = tokio::task::JoinSet::new();
    let (mut connected, mut failed) = (0usize, 0usize);
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    let mut opened = 0usize;
    while opened < args.subscribers && Instant::now() < deadline {
        let n = args.batch.min(args.subscribers - opened);
        let (tx, mut rx) = mpsc::channel(n);
        for _ in 0..n {
            tasks.spawn(subscribe(
                base.clone(),
                stats.clone(),
                tx.clone(),
                stop.clone(),
            ));
        }
        drop(tx);
        opened += n;
        while let Ok(Some(outcome)) = tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            match outcome {
                Ok(()) => connected += 1,
                Err(e) => {
                    failed += 1;
                    let key: String = e.chars().take(90).collect();
                    *failures.entry(key).or_default() += 1;
                }
            }
        }
        if opened % 2000 < args.batch {
            eprintln!(
                "[chat_load] {connected} connected, {failed} failed, {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "[chat_load] connect phase: {connected} connected, {failed} failed in {connect_secs:.1} s"
    );
    for (e, n) in &failures {
        eprintln!("[chat_load]   {n} x {e}");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_connected = pid.and_then(rss_kb);

    // The sender.
    let sender_url = format!("{base}?name=bench-sender");
    let ws = match join(&sender_url).await {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("[chat_load] sender could not join: {e}");
            std::process::exit(1);
        }
    };
    let (mut sink, mut source) = ws.split();
    let sender_errors = Arc::new(AtomicU64::new(0));
    let errors = sender_errors.clone();
    let sender_stop = stop.clone();
    let sender_reader = tokio::spawn(async move {
        loop {
            let frame = tokio::select! {
                () = sender_stop.cancelled() => return,
                frame = source.next() => frame,
            };
            match frame {
                Some(Ok(Message::Text(t))) if t.starts_with("{\"type\":\"error\"") => {
                    eprintln!("[chat_load] sender got {t}");
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(_)) => {}
                _ => return,
            }
        }
    });
    let metrics_before = scrape(args.addr).await;
    let live_at_send = connected - stats_closed(&stats);
    let cpu_before = pid.and_then(|p| cpu_ticks(&p.to_string()));
    let self_before = cpu_ticks("self");
    let send_start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    let mut sent = 0usize;
    for seq in 0..total {
        tick.tick().await;
        let text = format!(
            "{{\"type\":\"message\",\"text\":\"seq={seq} t={}\"}}",
            now_us()
        );
        if tokio::time::timeout(Duration::from_secs(5), sink.send(Message::text(text)))
            .await
            .is_err_or_failed()
        {
            eprintln!("[chat_load] sender failed at seq {seq}");
            break;
        }
        sent += 1;
    }
    let send_secs = send_start.elapsed().as_secs_f64();
    let cpu_send = pid.and_then(|p| cpu_ticks(&p.to_string()));
    let self_send = cpu_ticks("self");
    // Drain: until every live subscriber has every message, or the drain time.
    let drain_deadline = Instant::now() + args.drain;
    let expected = |stats: &Stats| (connected - stats_closed(stats)) as u64 * sent as u64;
    let delivered = |stats: &Stats| -> u64 {
        stats
            .received
            .iter()
            .map(|c| u64::from(c.load(Ordering::Relaxed)))
            .sum()
    };
    while Instant::now() < drain_deadline && delivered(&stats) < expected(&stats) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wall = send_start.elapsed().as_secs_f64();
    let cpu_after = pid.and_then(|p| cpu_ticks(&p.to_string()));
    let self_after = cpu_ticks("self");
    let rss_after = pid.and_then(rss_kb);
    let metrics_after = scrape(args.addr).await;

    // Results.
    let got = delivered(&stats);
    let want = live_at_send as u64 * sent as u64;
    let dropped_subs = stats_closed(&stats);
    println!("subscribers_requested={}", args.subscribers);
    println!("subscribers_connected={connected}");
    println!("subscribers_failed={failed}");
    println!("connect_seconds={connect_secs:.1}");
    println!("messages_sent={sent}");
    println!("send_seconds={send_secs:.2}");
    println!("deliveries_expected={want}");
    println!("deliveries_received={got}");
    println!("deliveries_lost={}", want.saturating_sub(got));
    println!("subscribers_closed_during_run={dropped_subs}");
    for (reason, n) in stats
        .closed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
    {
        println!("closed_reason[{reason}]={n}");
    }
    println!(
        "sender_error_frames={}",
        sender_errors.load(Ordering::Relaxed)
    );
    println!("latency_p50_ms={:.2}", stats.quantile_ms(0.50));
    println!("latency_p90_ms={:.2}", stats.quantile_ms(0.90));
    println!("latency_p99_ms={:.2}", stats.quantile_ms(0.99));
    println!("latency_p999_ms={:.2}", stats.quantile_ms(0.999));
    println!(
        "latency_max_ms={:.2}",
        stats.max_us.load(Ordering::Relaxed) as f64 / 1000.0
    );
    println!(
        "latency_negative={}",
        stats.negative.load(Ordering::Relaxed)
    );
    if let (Some(b), Some(c)) = (rss_before, rss_connected) {
        println!("server_rss_before_kb={b}");
        println!("server_rss_connected_kb={c}");
        if connected > 0 {
            println!(
                "server_rss_per_connection_kb={:.2}",
                (c as f64 - b as f64) / connected as f64
            );
        }
    }
    if let Some(a) = rss_after {
        println!("server_rss_after_send_kb={a}");
    }
    if let (Some(b), Some(s), Some(a)) = (cpu_before, cpu_send, cpu_after) {
        let cpu_s = (s - b) as f64 / args.clk_tck;
        println!("server_cpu_seconds_send={cpu_s:.2}");
        println!("server_cpu_cores_send={:.3}", cpu_s / send_secs);
        let cpu_w = (a - b) as f64 / args.clk_tck;
        println!("server_cpu_seconds_send_drain={cpu_w:.2}");
        println!("server_cpu_cores_send_drain={:.3}", cpu_w / wall);
    }
    if let (Some(b), Some(s)) = (self_before, self_send) {
        let cpu_s = (s - b) as f64 / args.clk_tck;
        println!("client_cpu_seconds_send={cpu_s:.2}");
        println!("client_cpu_cores_send={:.3}", cpu_s / send_secs);
    }
    let _ = self_after;
    let (before, sum0, count0) = fanout(&metrics_before);
    let (after, sum1, count1) = fanout(&metrics_after);
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|&(le, c)| {
            let old = before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
            (le, c - old)
        })
        .collect();
    let n = count1 - count0;
    println!("server_fanout_samples={n}");
    if n > 0.0 {
        println!("server_fanout_mean_ms={:.3}", (sum1 - sum0) / n * 1000.0);
        println!("server_fanout_p50_ms={:.3}", bucket_quantile(&delta, 0.5));
        println!("server_fanout_p99_ms={:.3}", bucket_quantile(&delta, 0.99));
        let buckets: Vec<String> = delta
            .iter()
            .map(|(le, c)| format!("le{}={}", le * 1000.0, c))
            .collect();
        println!("server_fanout_buckets_ms={}", buckets.join(","));
    }
    eprintln!("--- /metrics headwater_chat_* before connecting ---\n{metrics_before_connect}--- before sending ---\n{metrics_before}--- after sending ---\n{metrics_after}");

    stop.cancel();
    let _ = sender_reader.await;
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

fn stats_closed(stats: &Stats) -> usize {
    stats
        .closed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .filter(|(reason, _)| !reason.starts_with("error frame"))
        .map(|(_, n)| *n as usize)
        .sum()
}

trait Failed {
    fn is_err_or_failed(&self) -> bool;
}

impl<T, E> Failed for Result<Result<T, E>, tokio::time::error::Elapsed> {
    fn is_err_or_failed(&self) -> bool {
        !matches!(self, Ok(Ok(_)))
    }
}

//! Compression throughput of the layer writer: single-threaded (what layers used before)
//! against the parallel compressors, on a file given as the argument (a tar, say).
//!
//! `cargo run --release -p ocibuild-snapshot --example compress -- FILE` prints, per
//! compressor, the best of three runs: MB/s of input, CPU time of every thread, the output
//! size, its ratio to the input and the process's peak resident memory while it ran. `benches/compress.sh` makes the input and runs it.

use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::Path;
use std::time::Instant;

use ocibuild_snapshot::compress::{
    compression_threads, zstd_encoder, ParallelGzip, MAX_ZSTD_WORKERS,
};
use ocibuild_snapshot::DEFAULT_GZIP_LEVEL;

/// A writer that only counts.
#[derive(Default)]
struct Count(u64);

impl Write for Count {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Peak resident memory of this process in MiB, reset to the current size afterwards.
fn take_peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    // "5" resets the peak to the current resident size (Linux 4.0 and later).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    kib / 1024
}

/// CPU time of this process so far (every thread, user and system), in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which ends with ')'): utime is the 12th, stime the
    // 13th, in clock ticks of 1/100 s.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Streams `input` through the compressor `make` builds, `RUNS` times, and prints one line:
/// the best throughput, the output, and the CPU time and peak memory of the best run.
fn run<E: Write>(
    name: &str,
    input: &Path,
    make: impl Fn(Count) -> io::Result<E>,
    finish: impl Fn(E) -> io::Result<Count>,
) -> io::Result<()> {
    let mut best: Option<(f64, u64, u64, f64, u64)> = None;
    for _ in 0..RUNS {
        take_peak_rss();
        let (start, cpu) = (Instant::now(), cpu_seconds());
        let mut reader = BufReader::with_capacity(256 * 1024, File::open(input)?);
        let mut encoder = make(Count::default())?;
        let read = io::copy(&mut reader, &mut encoder)?;
        let written = finish(encoder)?.0;
        let secs = start.elapsed().as_secs_f64();
        let this = (secs, read, written, cpu_seconds() - cpu, take_peak_rss());
        if !matches!(best, Some(b) if b.0 <= secs) {
            best = Some(this);
        }
    }
    let Some((secs, read, written, cpu, rss)) = best else {
        return Ok(());
    };
    println!(
        "{name:<28} {:>7.1} MB/s  {:>5.2} s CPU  {written:>10} bytes  ratio {:.4}  peak RSS {rss:>3} MiB",
        read as f64 / secs / 1e6,
        cpu,
        written as f64 / read.max(1) as f64,
    );
    Ok(())
}

/// Runs per compressor; the fastest counts (the others were slowed by something else).
const RUNS: usize = 3;

fn main() -> io::Result<()> {
    let Some(input) = std::env::args_os().nth(1) else {
        eprintln!("usage: compress FILE");
        std::process::exit(2);
    };
    let input = Path::new(&input);
    let threads = compression_threads();
    let level = DEFAULT_GZIP_LEVEL;
    println!(
        "input {} ({} bytes), {threads} threads",
        input.display(),
        std::fs::metadata(input)?.len()
    );
    let gz_level = flate2::Compression::new(level);
    run(
        "gzip, one stream (before)",
        input,
        |out| Ok(flate2::GzBuilder::new().mtime(0).write(out, gz_level)),
        |e| e.finish(),
    )?;
    for n in [1, threads] {
        run(
            &format!("gzip, parallel, {n} thread(s)"),
            input,
            |out| ParallelGzip::new(out, level, n),
            |e| e.finish(),
        )?;
    }
    run(
        "zstd 3, no workers (before)",
        input,
        |out| zstd::Encoder::new(out, 3),
        |e| e.finish(),
    )?;
    for n in [1, threads.min(MAX_ZSTD_WORKERS)] {
        run(
            &format!("zstd 3, {n} worker(s)"),
            input,
            |out| zstd_encoder(out, 3, n),
            |e| e.finish(),
        )?;
    }
    Ok(())
}

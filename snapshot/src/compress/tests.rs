use super::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A deterministic pseudo-random number generator (xorshift64) starting from `seed`.
fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

/// Deterministic mixed content: text lines, incompressible runs, zeros and long runs of a
/// four-letter alphabet (many matches of every length, as in binaries), `len` bytes.
pub(crate) fn mixed_data(len: usize) -> Vec<u8> {
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        match next() % 4 {
            0 => {
                for _ in 0..(next() % 200) {
                    let line = format!(
                        "line {} of a config file: key{}=value\n",
                        next() % 1000,
                        next() % 50
                    );
                    out.extend_from_slice(line.as_bytes());
                }
            }
            1 => out.extend((0..(next() % 20_000)).map(|_| next() as u8)),
            2 => out.extend((0..(next() % 50_000)).map(|_| b"acgt"[(next() % 4) as usize])),
            _ => out.resize(out.len() + (next() % 30_000) as usize, 0),
        }
    }
    out.truncate(len);
    out
}

/// Gzips `data` with `threads` threads, writing it in pieces of `piece` bytes.
fn gzip(data: &[u8], level: u32, threads: usize, piece: usize) -> Vec<u8> {
    let mut gz = ParallelGzip::new(Vec::new(), level, threads).unwrap();
    for part in data.chunks(piece.max(1)) {
        gz.write_all(part).unwrap();
    }
    gz.finish().unwrap()
}

/// Decodes exactly one gzip member, which must span all of `gz`.
fn gunzip_one_member(gz: &[u8]) -> Vec<u8> {
    let mut decoder = flate2::read::GzDecoder::new(gz);
    let mut out = Vec::new();
    decoder.read_to_end(&mut out).unwrap();
    let mut rest = Vec::new();
    decoder.into_inner().read_to_end(&mut rest).unwrap();
    assert!(
        rest.is_empty(),
        "{} bytes after the first member",
        rest.len()
    );
    out
}

#[test]
fn the_bytes_do_not_depend_on_the_thread_count() {
    let sizes = [
        0,
        1,
        GZIP_BLOCK_SIZE - 1,
        GZIP_BLOCK_SIZE,
        GZIP_BLOCK_SIZE + 1,
        3 * GZIP_BLOCK_SIZE,
        2_500_000,
    ];
    for size in sizes {
        let data = mixed_data(size);
        let one = gzip(&data, 6, 1, 64 * 1024);
        for threads in [2, 8] {
            assert_eq!(
                gzip(&data, 6, threads, 64 * 1024),
                one,
                "{size} bytes on {threads} threads"
            );
        }
        assert_eq!(gunzip_one_member(&one), data, "{size} bytes");
    }
}

#[test]
fn the_bytes_do_not_depend_on_how_the_input_is_written() {
    let data = mixed_data(700_000);
    let whole = gzip(&data, 6, 2, data.len());
    for piece in [1, 511, 4096, GZIP_BLOCK_SIZE + 3] {
        assert_eq!(gzip(&data, 6, 2, piece), whole, "pieces of {piece}");
    }
    let mut flushed = ParallelGzip::new(Vec::new(), 6, 2).unwrap();
    for part in data.chunks(100_000) {
        flushed.write_all(part).unwrap();
        flushed.flush().unwrap();
    }
    assert_eq!(flushed.finish().unwrap(), whole, "flush cuts no block");
}

#[test]
fn every_level_round_trips() {
    let data = mixed_data(3 * GZIP_BLOCK_SIZE + 17);
    for level in 0..=9 {
        let gz = gzip(&data, level, 2, 10_000);
        assert_eq!(gunzip_one_member(&gz), data, "level {level}");
        assert_eq!(gz, gzip(&data, level, 1, 10_000), "level {level}");
    }
}

/// Each block is primed with the previous block's last 32 KiB, so a repeat that crosses
/// a block boundary is still found.
#[test]
fn blocks_see_the_end_of_the_block_before() {
    let chunk = mixed_data(40_000)
        .into_iter()
        .rev()
        .filter(|b| *b != 0)
        .take(16 * 1024)
        .collect::<Vec<_>>();
    let data = chunk.repeat(32);
    let gz = gzip(&data, 6, 2, data.len());
    assert_eq!(gunzip_one_member(&gz), data);
    assert!(
        gz.len() < chunk.len() + 8 * 1024,
        "{} bytes for 4 blocks repeating {} bytes: the dictionary is not used",
        gz.len(),
        chunk.len()
    );
}

#[test]
fn the_header_names_no_time_and_no_system() {
    let gz = gzip(b"hello", 6, 1, 5);
    assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    assert_eq!(&gzip(b"", 9, 1, 1)[8..10], &[2, 255]);
    assert_eq!(&gzip(b"", 1, 1, 1)[8..10], &[4, 255]);
    let trailer = &gz[gz.len() - 8..];
    assert_eq!(&trailer[4..], &5u32.to_le_bytes(), "ISIZE");
}

/// A writer that fails once it has taken `left` bytes.
struct FailingWriter {
    left: usize,
}

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other("disk full"));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failing_output_is_an_error_not_a_hang() {
    let data = mixed_data(4_000_000);
    for threads in [1, 2, 8] {
        let mut gz = ParallelGzip::new(FailingWriter { left: 300_000 }, 6, threads).unwrap();
        let written = gz.write_all(&data).and_then(|()| gz.finish().map(drop));
        let err = written.unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
    }
    let mut dropped = ParallelGzip::new(Vec::new(), 6, 8).unwrap();
    dropped.write_all(&data).unwrap();
    drop(dropped);
}

fn zstd_bytes(data: &[u8], workers: usize) -> Vec<u8> {
    let mut encoder = zstd_encoder(Vec::new(), 3, workers).unwrap();
    for part in data.chunks(100_000) {
        encoder.write_all(part).unwrap();
    }
    encoder.finish().unwrap()
}

/// libzstd's multi-threaded output depends on the job size, not on the number of workers
/// (as long as there is one): zero workers is never asked for.
#[test]
fn zstd_bytes_do_not_depend_on_the_worker_count() {
    let data = mixed_data(3 * ZSTD_JOB_SIZE as usize + 12_345);
    let one = zstd_bytes(&data, 1);
    for workers in [0, 2, 3, MAX_ZSTD_WORKERS] {
        assert_eq!(zstd_bytes(&data, workers), one, "{workers} workers");
    }
    assert_eq!(zstd::decode_all(&one[..]).unwrap(), data);
}

#[test]
fn thread_count_is_capped() {
    let threads = compression_threads();
    assert!((1..=MAX_THREADS).contains(&threads), "{threads}");
}

/// Runs `command` on the gzip file `path`, and returns what it decoded.
fn decoded_by(mut command: Command, path: &Path) -> Vec<u8> {
    let out = command.arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `go run` of the program that decodes one gzip member with Go's compress/gzip; its build
/// cache is `$GOCACHE`, or a directory under the temporary one where `$HOME` may be unset.
fn go_reader() -> Command {
    let program = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/gunzip/main.go");
    let cache = std::env::var_os("GOCACHE")
        .unwrap_or_else(|| std::env::temp_dir().join("ocibuild-go-build").into());
    let mut go = Command::new("go");
    go.args(["run", program]).env("GOCACHE", cache);
    go
}

/// Python's gzip module, decoding the file given after it to stdout.
fn python_reader() -> Command {
    let mut python = Command::new("python3");
    python.args(["-c", PYTHON_READER]);
    python
}

/// GNU gzip, decoding the file given after it to stdout.
fn gnu_reader() -> Command {
    let mut gzip = Command::new("gzip");
    gzip.arg("-dc");
    gzip
}

/// The Python program of [`python_reader`].
const PYTHON_READER: &str =
    "import gzip, sys; sys.stdout.buffer.write(gzip.decompress(open(sys.argv[1], 'rb').read()))";

/// Writes the block-parallel gzip of an empty input, of a 12-block one and of random blocks
/// (stored) followed by mixed ones to files in `dir`.
fn sample_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut partly_random = random_data(4 * GZIP_BLOCK_SIZE, 3);
    partly_random.extend(mixed_data(2 * GZIP_BLOCK_SIZE + 7));
    [
        mixed_data(0),
        mixed_data(12 * GZIP_BLOCK_SIZE + 999),
        partly_random,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, data)| {
        let path = dir.join(format!("{i}.tar.gz"));
        std::fs::write(&path, gzip(&data, 6, 2, 50_000)).unwrap();
        (path, data)
    })
    .collect()
}

/// `len` pseudo-random bytes from `seed`.
fn random_data(len: usize, seed: u64) -> Vec<u8> {
    let mut next = xorshift(seed);
    (0..len).map(|_| next() as u8).collect()
}

/// Blocks deflate would not shrink (random, already compressed) are stored as they are:
/// the output is the input plus 5 bytes per 64 KiB and the gzip frame, it reads back, and
/// its bytes still do not depend on the thread count. Blocks that do shrink are deflated.
#[test]
fn incompressible_blocks_are_stored_as_they_are() {
    let data = random_data(10 * GZIP_BLOCK_SIZE + 5, 7);
    let one = gzip(&data, 6, 1, 100_000);
    for threads in [2, 8] {
        assert_eq!(gzip(&data, 6, threads, 100_000), one, "{threads} threads");
    }
    assert_eq!(gunzip_one_member(&one), data);
    let frame = 10 + 8;
    let per_block = 5 * GZIP_BLOCK_SIZE.div_ceil(65_535);
    assert!(
        one.len() <= data.len() + frame + 11 * per_block,
        "{} bytes for {}",
        one.len(),
        data.len()
    );

    let text: Vec<u8> = (0..40_000)
        .flat_map(|i| format!("line {i} of a log: status={}\n", i % 7).into_bytes())
        .collect();
    let mut half_random = random_data(GZIP_BLOCK_SIZE / 2, 11);
    half_random.extend_from_slice(&text[..GZIP_BLOCK_SIZE / 2]);
    for (name, data) in [("text", &text), ("half random", &half_random)] {
        let gz = gzip(data, 6, 2, 100_000);
        assert!(
            gz.len() < data.len() * 3 / 4,
            "{name}: {} of {}",
            gz.len(),
            data.len()
        );
        assert_eq!(&gunzip_one_member(&gz), data, "{name}");
    }
}

/// GNU gzip and Python's gzip module read the block-parallel output as the one gzip
/// member it is, checking its CRC-32 and length.
#[test]
fn gnu_gzip_and_python_read_the_output() {
    let dir = tempfile::tempdir().unwrap();
    for (path, data) in sample_files(dir.path()) {
        let test = Command::new("gzip").arg("-t").arg(&path).status().unwrap();
        assert!(test.success(), "gzip -t {}", path.display());
        assert!(decoded_by(gnu_reader(), &path) == data, "GNU gzip");
        assert!(decoded_by(python_reader(), &path) == data, "Python");
    }
}

/// Go's compress/gzip (what containerd and the Docker daemon use) reads the output as one
/// member, and refuses it once a byte is changed.
#[test]
#[ignore = "needs the lab: scripts/test.sh runs it"]
fn go_reads_the_output() {
    let dir = tempfile::tempdir().unwrap();
    for (path, data) in sample_files(dir.path()) {
        assert!(decoded_by(go_reader(), &path) == data, "Go");
    }
    let go = go_reader()
        .arg(corrupted_file(dir.path()))
        .output()
        .unwrap();
    assert!(!go.status.success(), "Go accepted a corrupted file");
}

/// Writes a stored (level 0) gzip of four blocks with one bit of a block's data flipped.
fn corrupted_file(dir: &Path) -> PathBuf {
    let data = vec![b'a'; 4 * GZIP_BLOCK_SIZE];
    let mut gz = gzip(&data, 0, 2, data.len());
    let middle = gz.len() / 2;
    gz[middle] ^= 0x01;
    let path = dir.join("bad.gz");
    std::fs::write(&path, &gz).unwrap();
    path
}

/// A changed byte in the middle of a block is caught: the trailer's CRC-32 covers the
/// whole input, so the readers above really check what they read.
#[test]
fn readers_reject_a_corrupted_block() {
    let dir = tempfile::tempdir().unwrap();
    let bad = corrupted_file(dir.path());
    let test = Command::new("gzip").arg("-t").arg(&bad).output().unwrap();
    assert!(!test.status.success(), "gzip -t accepted a corrupted file");
    let python = python_reader().arg(&bad).output().unwrap();
    assert!(!python.status.success(), "Python accepted a corrupted file");
}

/// zlib-rs's reset clears neither the window nor the hash chains (`prev`), and with a
/// dictionary the match search can follow a stale chain entry: a compressor reused block
/// after block would choose its matches by the blocks it deflated before, which differ
/// with the number of threads. Every block is deflated as a fresh compressor would.
#[test]
fn a_block_does_not_depend_on_the_blocks_deflated_before() {
    let mut next = xorshift(7);
    let mut deflater = BlockDeflater::new(6);
    for round in 0..40 {
        let letters = 2 + next() % 4;
        let mut text = |max: u64| -> Vec<u8> {
            let len = 1 + next() % max;
            (0..len).map(|_| b'a' + (next() % letters) as u8).collect()
        };
        let job = Job {
            dictionary: text(2_000),
            data: text(2_000),
            last: false,
        };
        let earlier = Job {
            dictionary: text(2_000),
            data: text(4_000),
            last: false,
        };
        deflater.deflate(&earlier).unwrap();
        let reused = deflater.deflate(&job).unwrap().bytes;
        let fresh = BlockDeflater::new(6).deflate(&job).unwrap().bytes;
        assert!(reused == fresh, "round {round}");
    }
}

/// Which blocks skip deflate: random ones; not text, zeros, or a block half random.
#[test]
fn only_blocks_deflate_would_not_shrink_count_as_incompressible() {
    let random = random_data(GZIP_BLOCK_SIZE, 5);
    assert!(incompressible(&random));
    assert!(!incompressible(&vec![0; GZIP_BLOCK_SIZE]));
    let text: Vec<u8> = (0..5_000)
        .flat_map(|i| format!("key{i}=value {}\n", i % 13).into_bytes())
        .take(GZIP_BLOCK_SIZE)
        .collect();
    assert!(!incompressible(&text));
    let mut half = random[..GZIP_BLOCK_SIZE / 2].to_vec();
    half.resize(GZIP_BLOCK_SIZE, b'a');
    assert!(!incompressible(&half));
    assert!(
        !incompressible(&random[..SAMPLES * SAMPLE_SIZE - 1]),
        "too short to sample"
    );
}

//! Layer compressors that use several cores and still give the same bytes on every machine.
//!
//! [`ParallelGzip`] is block-parallel gzip as pigz does it: the input is cut into
//! [`GZIP_BLOCK_SIZE`] blocks, each block is deflated on a worker thread with the previous
//! block's last 32 KiB as its dictionary and ends on a byte boundary (a sync flush), and the
//! blocks are written in order between one gzip header and one trailer (CRC-32 and size of
//! the whole input). The output is a single ordinary gzip member that every gzip reader
//! accepts, and it depends only on the input bytes, the level and the block size — never on
//! the number of threads or on how the input was split into `write` calls. A block that
//! deflate would not shrink (already-compressed or random data, judged from a few samples)
//! is written as stored blocks instead of being deflated, about twenty times faster.
//!
//! [`zstd_encoder`] is libzstd's own multi-threaded mode with the job size pinned
//! ([`ZSTD_JOB_SIZE`]) and always at least one worker: libzstd's output then depends on the
//! job size, not on the number of workers.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Crc, FlushCompress, Status};

/// Size of the blocks gzip input is cut into before they are deflated in parallel.
///
/// The gzip bytes decide layer digests, so this is pinned: changing it changes the digest
/// of every gzip layer. 128 KiB is pigz's default. With the 32 KiB dictionary carried over
/// from the previous block, the block size hardly matters to the ratio (on a 100 MB tar of
/// `/usr` at level 6, 32 KiB to 1 MiB blocks are all within 0.25 % of one single deflate
/// stream, 128 KiB 0.04 % smaller), but each block costs a fresh compressor and hashing
/// its dictionary (a quarter of its own size at 128 KiB), and memory grows with it: two
/// blocks in flight per thread stay under a megabyte each.
pub const GZIP_BLOCK_SIZE: usize = 128 * 1024;

/// Size of the compression jobs of multi-threaded zstd.
///
/// The zstd bytes decide layer digests, and libzstd's multi-threaded output depends on the
/// job size, so this is pinned instead of left to libzstd (which picks it from the level).
/// libzstd keeps about two jobs more than it has workers in memory, input and output:
/// on a 100 MB tar at level 3 with two workers, 2 MiB jobs peak at 25 MiB resident and
/// make the output 1.8 % bigger than single-threaded zstd; libzstd's own 8 MiB jobs peak
/// at 60 MiB for 0.2 %.
pub const ZSTD_JOB_SIZE: u32 = 2 * 1024 * 1024;

/// Most zstd workers a layer uses, which bounds zstd's memory (about 36 MiB with four
/// workers at level 3) on machines with many cores.
pub const MAX_ZSTD_WORKERS: usize = 4;

/// Most compression threads a layer uses, whatever the number of cores.
pub const MAX_THREADS: usize = 8;

/// How much of the previous block primes a block's dictionary: deflate's whole window.
const DICTIONARY_SIZE: usize = 32 * 1024;

/// Output space handed to deflate per call; a constant, so the output never depends on
/// how much room a buffer happened to have.
const OUTPUT_CHUNK: usize = 64 * 1024;

/// Number of compression threads for a layer: the available cores, at most [`MAX_THREADS`].
pub fn compression_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, MAX_THREADS)
}

/// A zstd writer at `level` using `workers` worker threads: at least one (libzstd's output
/// without workers differs from its output with any number of them), at most
/// [`MAX_ZSTD_WORKERS`].
pub fn zstd_encoder<W: Write>(
    out: W,
    level: i32,
    workers: usize,
) -> io::Result<zstd::Encoder<'static, W>> {
    let mut encoder = zstd::Encoder::new(out, level)?;
    let workers = u32::try_from(workers.clamp(1, MAX_ZSTD_WORKERS)).unwrap_or(1);
    encoder.multithread(workers)?;
    encoder.set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_JOB_SIZE))?;
    Ok(encoder)
}

/// A gzip writer that deflates blocks of its input on worker threads; see the module docs.
///
/// Memory stays bounded: at most two blocks per thread are in flight, and each finished
/// block is written out as soon as the ones before it are. [`ParallelGzip::finish`] must be
/// called to write the last block and the trailer.
pub struct ParallelGzip<W: Write> {
    inner: W,
    level: u32,
    threads: usize,
    /// The block being filled; it is sent off once full and more input arrives.
    block: Vec<u8>,
    /// The last [`DICTIONARY_SIZE`] bytes of the block sent before `block`.
    dictionary: Vec<u8>,
    /// CRC-32 and length of the input whose deflated bytes are written so far.
    crc: Crc,
    /// Blocks sent to the workers, oldest first; each answers on its own channel.
    in_flight: VecDeque<Receiver<io::Result<Deflated>>>,
    /// The worker threads, started once the input outgrows one block (with more than one
    /// thread): small layers start none.
    pool: Option<Pool>,
    /// The compressor used on this thread (one thread, or a single-block input).
    local: Option<BlockDeflater>,
}

impl<W: Write> ParallelGzip<W> {
    /// Starts a gzip stream at `level` (0–9; more is 9) on `inner` using `threads`
    /// compression threads (1 compresses on the calling thread); writes the gzip header.
    pub fn new(mut inner: W, level: u32, threads: usize) -> io::Result<Self> {
        let level = level.min(9);
        inner.write_all(&gzip_header(level))?;
        Ok(ParallelGzip {
            inner,
            level,
            threads: threads.clamp(1, MAX_THREADS),
            block: Vec::with_capacity(GZIP_BLOCK_SIZE),
            dictionary: Vec::new(),
            crc: Crc::new(),
            in_flight: VecDeque::new(),
            pool: None,
            local: None,
        })
    }

    /// Deflates the last block, writes every pending block and the trailer, and returns the
    /// inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.send_block(true)?;
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        self.pool = None;
        // ISIZE is the input length modulo 2^32, which is what `amount` counts.
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        trailer[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
        self.inner.write_all(&trailer)?;
        Ok(self.inner)
    }

    /// Sends the current block off to be deflated (`last`: it ends the stream) and starts
    /// the next one; waits for old blocks while too many are in flight.
    fn send_block(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(GZIP_BLOCK_SIZE));
        let dictionary = std::mem::take(&mut self.dictionary);
        if !last {
            self.dictionary = data[data.len().saturating_sub(DICTIONARY_SIZE)..].to_vec();
        }
        let job = Job {
            dictionary,
            data,
            last,
        };
        if self.pool.is_none() && (self.threads == 1 || last) {
            let deflater = self
                .local
                .get_or_insert_with(|| BlockDeflater::new(self.level));
            let deflated = deflater.deflate(&job)?;
            return self.emit(deflated);
        }
        let pool = match &mut self.pool {
            Some(pool) => pool,
            None => self.pool.insert(Pool::start(self.level, self.threads)?),
        };
        self.in_flight.push_back(pool.submit(job)?);
        while self.in_flight.len() >= 2 * self.threads {
            self.write_oldest()?;
        }
        self.write_ready()
    }

    /// Writes the oldest block in flight, waiting for it.
    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(reply) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let deflated = reply
            .recv()
            .map_err(|_| io::Error::other("a gzip worker thread stopped"))??;
        self.emit(deflated)
    }

    /// Writes the blocks at the front of the queue that are already deflated.
    fn write_ready(&mut self) -> io::Result<()> {
        while let Some(reply) = self.in_flight.front() {
            match reply.try_recv() {
                Ok(deflated) => {
                    self.in_flight.pop_front();
                    self.emit(deflated?)?;
                }
                Err(mpsc::TryRecvError::Empty) => return Ok(()),
                Err(mpsc::TryRecvError::Disconnected) => return self.write_oldest(),
            }
        }
        Ok(())
    }

    /// Writes one deflated block, the next in order.
    fn emit(&mut self, deflated: Deflated) -> io::Result<()> {
        self.crc.combine(&deflated.crc);
        self.inner.write_all(&deflated.bytes)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.block.len() == GZIP_BLOCK_SIZE {
            self.send_block(false)?;
        }
        let n = buf.len().min(GZIP_BLOCK_SIZE - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    /// Writes every block already sent to the workers and flushes the inner writer. The
    /// block being filled stays open: cutting it here would make the output depend on
    /// when `flush` is called.
    fn flush(&mut self) -> io::Result<()> {
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        self.inner.flush()
    }
}

/// The 10-byte gzip header: no name, no time, "unknown" OS, so it is the same everywhere.
fn gzip_header(level: u32) -> [u8; 10] {
    let extra_flags = match level {
        9 => 2,
        0 | 1 => 4,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, extra_flags, 255]
}

/// One block to deflate.
struct Job {
    /// The bytes before this block, up to 32 KiB (empty for the first block).
    dictionary: Vec<u8>,
    /// The block's input.
    data: Vec<u8>,
    /// The block ends the stream (final deflate block) rather than a sync flush.
    last: bool,
}

/// One deflated block.
struct Deflated {
    /// Raw deflate bytes, ending on a byte boundary.
    bytes: Vec<u8>,
    /// CRC-32 and length of the block's input.
    crc: Crc,
}

/// Deflates blocks, each from a fresh compressor.
///
/// A fresh one, not a reset one: zlib-rs's reset clears neither the window nor the hash
/// chains, and with a dictionary the match search can follow a stale chain entry, so a
/// reused compressor's output would depend on the blocks it deflated before — and so on
/// the number of threads. A new compressor costs about 2 % of a block's time.
struct BlockDeflater {
    level: flate2::Compression,
    /// Fixed-size output space for each deflate call.
    chunk: Vec<u8>,
}

impl BlockDeflater {
    fn new(level: u32) -> Self {
        BlockDeflater {
            level: flate2::Compression::new(level),
            chunk: vec![0; OUTPUT_CHUNK],
        }
    }

    /// Deflates `job`: as stored blocks when deflating it would gain almost nothing
    /// ([`incompressible`]), else from a new state primed with its dictionary.
    fn deflate(&mut self, job: &Job) -> io::Result<Deflated> {
        let bytes = if self.level.level() > 0 && incompressible(&job.data) {
            stored(&job.data, job.last)
        } else {
            self.compress(job)?
        };
        let mut crc = Crc::new();
        crc.update(&job.data);
        Ok(Deflated { bytes, crc })
    }

    /// The deflate bytes of `job` from a new compressor primed with its dictionary.
    fn compress(&mut self, job: &Job) -> io::Result<Vec<u8>> {
        let mut c = Compress::new(self.level, false);
        if !job.dictionary.is_empty() {
            c.set_dictionary(&job.dictionary)
                .map_err(io::Error::other)?;
        }
        let flush = if job.last {
            FlushCompress::Finish
        } else {
            FlushCompress::Sync
        };
        let mut bytes = Vec::with_capacity(job.data.len() / 2 + 64);
        let mut taken = 0;
        loop {
            let (in_before, out_before) = (c.total_in(), c.total_out());
            let status = c
                .compress(&job.data[taken..], &mut self.chunk, flush)
                .map_err(io::Error::other)?;
            taken += usize::try_from(c.total_in() - in_before).map_err(io::Error::other)?;
            let made = usize::try_from(c.total_out() - out_before).map_err(io::Error::other)?;
            bytes.extend_from_slice(&self.chunk[..made]);
            let done = match status {
                Status::StreamEnd => true,
                _ => !job.last && taken == job.data.len() && made < self.chunk.len(),
            };
            if done {
                break;
            }
        }
        Ok(bytes)
    }
}

/// Bytes of each sample [`incompressible`] deflates.
const SAMPLE_SIZE: usize = 4 * 1024;

/// Samples [`incompressible`] takes of a block, evenly spread.
const SAMPLES: usize = 4;

/// Whether deflating `block` would gain (almost) nothing, as for data already compressed
/// or random: [`SAMPLES`] evenly spread samples of [`SAMPLE_SIZE`] bytes, each deflated on
/// its own at level 1, together shrink by less than 2 %. Deflating such data at level 6
/// costs most of a layer's compression time and saves nothing (zlib then writes stored
/// blocks itself), while the samples cost about a thirtieth of it. A function of the
/// block's bytes alone, so the output still depends only on the input.
fn incompressible(block: &[u8]) -> bool {
    if block.len() < SAMPLES * SAMPLE_SIZE {
        return false;
    }
    let stride = (block.len() - SAMPLE_SIZE) / (SAMPLES - 1);
    let mut out = vec![0u8; 2 * SAMPLE_SIZE];
    let mut deflated = 0;
    for i in 0..SAMPLES {
        let sample = &block[i * stride..i * stride + SAMPLE_SIZE];
        let mut c = Compress::new(flate2::Compression::fast(), false);
        match c.compress(sample, &mut out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => deflated += c.total_out() as usize,
            _ => return false,
        }
    }
    deflated * 100 >= SAMPLES * SAMPLE_SIZE * 98
}

/// Most bytes one stored deflate block holds.
const MAX_STORED: usize = 65_535;

/// `block` as stored (uncompressed) deflate blocks, the last one final when `last`. Each
/// starts on a byte boundary, as every block this module writes ends on one.
fn stored(block: &[u8], last: bool) -> Vec<u8> {
    let count = block.len().div_ceil(MAX_STORED).max(1);
    let mut out = Vec::with_capacity(block.len() + 5 * count);
    for (i, chunk) in block.chunks(MAX_STORED).enumerate() {
        let len = chunk.len() as u16;
        // BFINAL in bit 0, BTYPE 00 (stored) in bits 1-2, the rest of the byte padding.
        out.push(u8::from(last && i + 1 == count));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// Worker threads taking jobs from one shared queue.
struct Pool {
    jobs: Option<Sender<Task>>,
    workers: Vec<JoinHandle<()>>,
}

/// A job with the channel its answer goes to.
type Task = (Job, SyncSender<io::Result<Deflated>>);

impl Pool {
    /// Starts `threads` workers deflating at `level`.
    fn start(level: u32, threads: usize) -> io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Task>();
        let queue = Arc::new(Mutex::new(queue));
        let mut pool = Pool {
            jobs: Some(jobs),
            workers: Vec::with_capacity(threads),
        };
        for n in 0..threads {
            let queue = Arc::clone(&queue);
            let worker = std::thread::Builder::new()
                .name(format!("gzip-{n}"))
                .spawn(move || work(&queue, level))?;
            pool.workers.push(worker);
        }
        Ok(pool)
    }

    /// Queues `job`; its answer comes on the returned channel.
    fn submit(&self, job: Job) -> io::Result<Receiver<io::Result<Deflated>>> {
        let (reply, answer) = mpsc::sync_channel(1);
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        jobs.send((job, reply)).map_err(|_| stopped())?;
        Ok(answer)
    }
}

/// The error for a pool whose workers are gone.
fn stopped() -> io::Error {
    io::Error::other("the gzip worker threads stopped")
}

/// A worker's loop: deflate jobs until the queue closes.
fn work(queue: &Mutex<Receiver<Task>>, level: u32) {
    let mut deflater = BlockDeflater::new(level);
    loop {
        let task = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok((job, reply)) = task else {
            return;
        };
        // The writer may be gone (it stopped on an error); nothing is waiting then.
        let _ = reply.send(deflater.deflate(&job));
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;

//! Sequential I/O timing for `scripts/bench-io.sh`: writes or reads one file through
//! pagebuf's `DirectWriter` / `DirectReader` (or `std::fs` buffered + fsync, for
//! contrast) and prints `MODE BYTES SECONDS MIB_PER_S` on one line.
//!
//! `write` goes through `io::Write` (one copy of every byte into the writer's blocks);
//! `write-blocks` fills one of the writer's own blocks once and hands it over again and
//! again with `write_buffer` (no copy: what fio and dd do with their buffers).
//!
//! `cargo run --release -p pagebuf --example seqio -- write|write-blocks|read|buffered PATH SIZE BLOCK [DEPTH]`

use std::io::{BufRead, Write};
use std::time::Instant;

use pagebuf::direct::DirectFile;
use pagebuf::direct::{DirectReader, DirectReaderOptions, DirectWriter, DirectWriterOptions};

/// A new file at `path` written in blocks of `block` bytes, `depth` in flight.
fn writer(path: &str, block: usize, depth: usize) -> pagebuf::Result<DirectWriter> {
    DirectWriter::with_options(
        DirectFile::create(path)?,
        DirectWriterOptions::default()
            .block_size(block)
            .depth(depth),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, path, size, block, rest @ ..] = &args[..] else {
        return Err(
            "usage: seqio write|write-blocks|read|buffered PATH SIZE_BYTES BLOCK_BYTES [DEPTH]"
                .into(),
        );
    };
    let size: usize = size.parse()?;
    let block: usize = block.parse()?;
    let depth: usize = rest.first().map(|d| d.parse()).transpose()?.unwrap_or(4);
    let chunk: Vec<u8> = (0..block).map(|i| (i * 7) as u8).collect();
    let started = Instant::now();
    let bytes = match mode.as_str() {
        "write" => {
            let mut out = writer(path, block, depth)?;
            let mut left = size;
            while left > 0 {
                let n = left.min(block);
                out.write_all(&chunk[..n])?;
                left -= n;
            }
            out.finish()? as usize
        }
        "write-blocks" => {
            let mut out = writer(path, block, depth)?;
            let mut filled = out.allocate_block()?;
            filled.extend_from_slice(&chunk)?;
            let filled = filled.freeze();
            let mut left = size;
            while left > 0 {
                let n = left.min(block);
                out.write_buffer(filled.slice(..n)?)?;
                left -= n;
            }
            out.finish()? as usize
        }
        "read" => {
            // BufRead: the blocks as read, no copy into a buffer of ours (fio and dd
            // do not copy either).
            let mut input = DirectReader::with_options(
                DirectFile::open(path)?,
                DirectReaderOptions::default()
                    .block_size(block)
                    .depth(depth),
            )?;
            let mut total = 0;
            loop {
                let n = input.fill_buf()?.len();
                if n == 0 {
                    break total;
                }
                input.consume(n);
                total += n;
            }
        }
        "buffered" => {
            let mut out = std::fs::File::create(path)?;
            let mut left = size;
            while left > 0 {
                let n = left.min(block);
                out.write_all(&chunk[..n])?;
                left -= n;
            }
            out.sync_all()?;
            size
        }
        other => return Err(format!("unknown mode {other}").into()),
    };
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{mode} {bytes} {seconds:.3} {:.0}",
        bytes as f64 / seconds / (1 << 20) as f64
    );
    Ok(())
}

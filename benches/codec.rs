//! Micro benchmarks of the per-byte and per-frame work on the relay path:
//! frame header parse/encode, (re-)masking against a plain memcpy of the
//! same size (the physical limit), UTF-8 validation, the accept key, and
//! the `frames` transform over one relay chunk of small frames and of part
//! of a large frame.
//!
//! Run with `cargo bench --bench codec`; criterion prints throughput.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use wsgate::relay::frames::{FrameCodec, FrameLimits, Source};
use wsgate::relay::pump::Transform;
use wsgate::ws::frame::{FrameHeader, OpCode};
use wsgate::ws::handshake::accept_key;
use wsgate::ws::mask::{apply_mask, combine_keys};
use wsgate::ws::utf8::Utf8Validator;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const CHUNK: usize = wsgate::relay::buffer::CHUNK_SIZE;

fn frame_header(c: &mut Criterion) {
    let header = FrameHeader {
        fin: true,
        rsv: 0,
        opcode: OpCode::Binary,
        mask: Some(KEY),
        payload_len: 65536,
    };
    let mut encoded = [0u8; 14];
    let n = header.encode(&mut encoded);
    let mut group = c.benchmark_group("frame_header");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse", |b| {
        b.iter(|| FrameHeader::parse(black_box(&encoded[..n])))
    });
    group.bench_function("encode", |b| {
        let mut out = [0u8; 14];
        b.iter(|| black_box(&header).encode(&mut out))
    });
    group.finish();
}

fn masking(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for size in [64usize, CHUNK, 1 << 20] {
        let mut data = vec![0xa5u8; size];
        let source = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("unmask", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut data), KEY, 3))
        });
        let remask = combine_keys(KEY, [1, 2, 3, 4]);
        group.bench_with_input(BenchmarkId::new("remask_combined", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut data), remask, 0))
        });
        group.bench_with_input(BenchmarkId::new("memcpy", size), &size, |b, _| {
            b.iter(|| data.copy_from_slice(black_box(&source)))
        });
    }
    group.finish();
}

fn utf8(c: &mut Criterion) {
    let ascii = "The quick brown fox jumps over the lazy dog. ".repeat(400);
    let mixed = "Grüße, 世界! Καλημέρα κόσμε ✓ ".repeat(400);
    let mut group = c.benchmark_group("utf8");
    for (name, text) in [("ascii", &ascii), ("mixed", &mixed)] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| {
            let mut v = Utf8Validator::new();
            b.iter(|| {
                // Fed in two pieces, split inside a character where there is one.
                let bytes = black_box(text.as_bytes());
                let mid = bytes.len() / 2 + 1;
                v.feed(&bytes[..mid]).unwrap();
                v.feed(&bytes[mid..]).unwrap();
                v.finish().unwrap();
            })
        });
    }
    group.finish();
}

fn accept(c: &mut Criterion) {
    c.bench_function("accept_key", |b| {
        b.iter(|| accept_key(black_box(b"dGhlIHNhbXBsZSBub25jZQ==")))
    });
}

/// One relay chunk of what a client sends: back-to-back masked frames of
/// `payload` bytes (or the first chunk of one frame if it is larger).
fn client_chunk(payload: usize, opcode: OpCode) -> (Vec<u8>, u64) {
    let mut out = Vec::with_capacity(CHUNK + payload + 14);
    let mut frames = 0;
    let body: Vec<u8> = (0..payload).map(|i| b'a' + (i % 26) as u8).collect();
    loop {
        let header = FrameHeader {
            fin: true,
            rsv: 0,
            opcode,
            mask: Some(KEY),
            payload_len: payload as u64,
        };
        let mut h = [0u8; 14];
        let n = header.encode(&mut h);
        if frames > 0 && out.len() + n + payload > CHUNK {
            break;
        }
        out.extend_from_slice(&h[..n]);
        let start = out.len();
        out.extend_from_slice(&body);
        apply_mask(&mut out[start..], KEY, 0);
        frames += 1;
    }
    out.truncate(CHUNK);
    (out, frames)
}

fn frames_transform(c: &mut Criterion) {
    let limits = FrameLimits {
        max_frame_size: 64 << 20,
        max_message_size: 64 << 20,
        deflate: false,
    };
    let mut group = c.benchmark_group("frames_transform");
    for (name, payload, opcode) in [
        ("text_64B_frames", 64usize, OpCode::Text),
        ("binary_64B_frames", 64, OpCode::Binary),
        ("text_64KiB_frame", 65536, OpCode::Text),
        ("binary_64KiB_frame", 65536, OpCode::Binary),
    ] {
        let (template, frames) = client_chunk(payload, opcode);
        let mut buf = template.clone();
        if payload < CHUNK {
            group.throughput(Throughput::Elements(frames));
        } else {
            group.throughput(Throughput::Bytes(buf.len() as u64));
        }
        group.bench_function(name, |b| {
            b.iter(|| {
                // A fresh codec per chunk keeps every iteration identical.
                let mut codec = FrameCodec::new(Source::Client, limits);
                buf.copy_from_slice(&template);
                black_box(codec.process(&mut buf))
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    frame_header,
    masking,
    utf8,
    accept,
    frames_transform
);
criterion_main!(benches);

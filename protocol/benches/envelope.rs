//! Envelope seal+open throughput against raw XChaCha20-Poly1305
//! encrypt+decrypt of the same payloads, measured in the same run
//! (DESIGN.md section 8: ratios, not absolute times, because shared
//! machines drift).
//!
//! A plain timing main rather than criterion: the output we need is one
//! ratio table, and rounds of envelope and raw are interleaved so that
//! noise from other processes hits both sides alike. Runtime is ~15 s.
//!
//! Requirement: envelope >= 0.8 x raw for 262 B and 64 KiB payloads.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::Aead;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use orgsync_protocol::envelope::{open, seal, StreamKind};
use orgsync_protocol::identity::{OrgKeyPair, PairKeys};
use rand_core::{OsRng, RngCore};

/// Interleaved rounds per measurement; the best round of each side counts.
const ROUNDS: usize = 7;
/// Time spent per round per side.
const ROUND_TIME: Duration = Duration::from_millis(150);

fn keys() -> (PairKeys, PairKeys) {
    let a = OrgKeyPair::from_secret_bytes(&[1; 32]);
    let b = OrgKeyPair::from_secret_bytes(&[2; 32]);
    let (ida, idb) = (a.public().org_id(), b.public().org_id());
    (
        a.pair_keys(ida, idb, &b.public(), 0)
            .expect("distinct test keys"),
        b.pair_keys(idb, ida, &a.public(), 0)
            .expect("distinct test keys"),
    )
}

/// Runs `f` repeatedly for about `ROUND_TIME`; returns seconds per call.
fn time_round(f: &mut dyn FnMut()) -> f64 {
    // Calibrate a batch size so the clock is read rarely.
    let mut batch = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        if t.elapsed() >= Duration::from_millis(5) {
            break;
        }
        batch *= 2;
    }
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < ROUND_TIME {
        for _ in 0..batch {
            f();
        }
        calls += batch;
    }
    start.elapsed().as_secs_f64() / calls as f64
}

/// Best seconds per call of `a` and `b`, measured in interleaved rounds.
fn compare(a: &mut dyn FnMut(), b: &mut dyn FnMut()) -> (f64, f64) {
    let (mut best_a, mut best_b) = (f64::MAX, f64::MAX);
    for _ in 0..ROUNDS {
        best_a = best_a.min(time_round(a));
        best_b = best_b.min(time_round(b));
    }
    (best_a, best_b)
}

fn main() {
    // `cargo test --benches` runs bench binaries with no `--bench` flag;
    // keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let (a, b) = keys();
    let raw = XChaCha20Poly1305::new(a.send.as_bytes().into());
    let nonce = XNonce::from([9u8; 24]);

    println!();
    println!("envelope seal+open vs raw XChaCha20-Poly1305 encrypt+decrypt (best of {ROUNDS} interleaved rounds)");
    println!(
        "{:>9} | {:>12} | {:>12} | {:>12} | {:>6} | verdict",
        "payload", "env MB/s", "env ops/s", "raw MB/s", "ratio"
    );
    println!("{}", "-".repeat(72));
    let mut all_pass = true;
    for (label, size) in [("262 B", 262usize), ("64 KiB", 64 * 1024)] {
        let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut seq = 0u64;
        let mut env_op = || {
            seq += 1;
            let env = seal(&a, StreamKind::Changes, seq, black_box(&payload));
            let pt = open(&b, black_box(&env)).expect("bench envelope opens");
            black_box(pt);
        };
        let mut raw_op = || {
            let ct = raw
                .encrypt(&nonce, black_box(payload.as_slice()))
                .expect("bench payload is small");
            let pt = raw
                .decrypt(&nonce, black_box(ct.as_slice()))
                .expect("bench ciphertext opens");
            black_box(pt);
        };
        let (env_s, raw_s) = compare(&mut env_op, &mut raw_op);
        let mb = |s: f64| size as f64 / s / 1e6;
        let ratio = raw_s / env_s;
        let pass = ratio >= 0.8;
        all_pass &= pass;
        println!(
            "{:>9} | {:>12.1} | {:>12.0} | {:>12.1} | {:>6.3} | {}",
            label,
            mb(env_s),
            1.0 / env_s,
            mb(raw_s),
            ratio,
            if pass { "PASS" } else { "FAIL" }
        );
    }
    println!("{}", "-".repeat(72));

    // Costs that decided the design (see the envelope module doc).
    let mut buf = [0u8; 24];
    let mut rng_op = || {
        OsRng.fill_bytes(&mut buf);
        black_box(&buf);
    };
    let mut key_id_op = || {
        black_box(black_box(&a.send).key_id());
    };
    let (rng_s, key_id_s) = compare(&mut rng_op, &mut key_id_op);
    println!(
        "per-envelope costs avoided or kept: OsRng 24-byte nonce {:.0} ns, key id {:.0} ns",
        rng_s * 1e9,
        key_id_s * 1e9
    );
    println!("overall: {}", if all_pass { "PASS" } else { "FAIL" });
}

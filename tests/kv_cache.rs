//! The KV cache: slot layout, visibility masks, ring wrap-around, truncation and
//! overflow, first with hand-computed positions, then end to end on the tiny T1 model
//! (window 8), where a wrapping ring, a chunked prefill and a truncate-and-redo must
//! give the same logits as one plain pass.

mod parity_support;

use gemma_core::attention::{visible_keys, Segment, SlotMap};
use gemma_core::kv_cache::{KvCache, LayerCache};
use gemma_core::{Config, CoreError, KvType, LayerConfig, Model, ModelOptions, Rope};
use parity_support::{fixtures, ids, read_json, Diff};

/// Three layers (local, local, global), window 4, one KV head of 32 values.
fn config() -> Config {
    let rope = Rope {
        freq_base: 10_000.0,
        freq_scale: 1.0,
    };
    let local = LayerConfig {
        window: Some(4),
        rope,
    };
    Config {
        n_embd: 64,
        n_layer: 3,
        n_ff: 64,
        n_head: 2,
        n_head_kv: 1,
        head_dim_k: 32,
        head_dim_v: 32,
        n_vocab: 16,
        context_length: 64,
        rms_eps: 1e-6,
        sliding_window: Some(4),
        layers: vec![local, local, LayerConfig { window: None, rope }],
        attention_scale: 1.0 / 32f32.sqrt(),
        embedding_scale: 8.0,
        final_logit_softcap: None,
    }
}

/// A cache of `ctx` positions with ring margin 2 (rings of 6 slots when ctx >= 6).
fn cache(ctx: usize) -> KvCache<usize> {
    KvCache::new(&config(), ctx, KvType::F16, 2, Ok).expect("cache")
}

#[test]
fn visible_keys_are_causal_and_windowed() {
    assert_eq!(visible_keys(0, Some(4)), 0..1);
    assert_eq!(visible_keys(2, Some(4)), 0..3);
    assert_eq!(visible_keys(3, Some(4)), 0..4);
    assert_eq!(visible_keys(4, Some(4)), 1..5);
    assert_eq!(visible_keys(10, Some(4)), 7..11);
    assert_eq!(visible_keys(10, Some(1)), 10..11);
    assert_eq!(visible_keys(10, None), 0..11);
}

#[test]
fn ring_segments_wrap_once() {
    let ring = SlotMap::Ring { slots: 6 };
    assert_eq!(ring.slot(13), 1);
    let segs: Vec<Segment> = ring.segments(4..9).collect();
    assert_eq!(
        segs,
        [
            Segment {
                pos: 4,
                slot: 4,
                len: 2
            },
            Segment {
                pos: 6,
                slot: 0,
                len: 3
            }
        ]
    );
    assert_eq!(segs[1].offsets(4), 2..5);
    let segs: Vec<Segment> = ring.segments(6..12).collect();
    assert_eq!(
        segs,
        [Segment {
            pos: 6,
            slot: 0,
            len: 6
        }]
    );
    let segs: Vec<Segment> = SlotMap::Linear.segments(3..40).collect();
    assert_eq!(
        segs,
        [Segment {
            pos: 3,
            slot: 3,
            len: 37
        }]
    );
}

#[test]
fn layout_and_size() {
    let c = cache(16);
    let slots: Vec<usize> = c.layers().iter().map(|l| l.slots()).collect();
    assert_eq!(slots, [6, 6, 16]);
    assert!(matches!(c.layers()[0], LayerCache::Sliding(_)));
    assert!(matches!(c.layers()[2], LayerCache::Global { .. }));
    // Per slot: K and V rows of 32 f16 values = 128 bytes; 28 slots.
    assert_eq!(c.bytes(), 28 * 128);
    // A ring of 6 with window 4 lets 3 tokens be stored before they attend.
    assert_eq!(c.max_tile(), 3);
    // A context no longer than window + margin never wraps: rings of ctx slots.
    let short = cache(5);
    assert_eq!(short.layers()[0].slots(), 5);
    assert_eq!(short.max_tile(), usize::MAX);
    let q8 = KvCache::new(&config(), 16, KvType::Q8_0, 2, Ok).expect("q8_0 cache");
    assert_eq!(q8.bytes(), 28 * 2 * 34);
}

#[test]
fn rings_forget_the_oldest_positions() {
    let mut c = cache(16);
    c.begin(3).unwrap();
    c.commit(3);
    assert_eq!((c.position(), c.layers()[0].oldest()), (3, 0));
    c.begin(3).unwrap();
    c.commit(3);
    assert_eq!((c.position(), c.layers()[0].oldest()), (6, 0));
    c.begin(4).unwrap();
    c.commit(4);
    // Positions 10 .. 15 overwrote slots 0..3: the ring holds 4..9.
    assert_eq!(
        (c.position(), c.layers()[0].oldest(), c.layers()[2].oldest()),
        (10, 4, 0)
    );
}

#[test]
fn truncation_within_the_ring() {
    let mut c = cache(16);
    c.begin(10).unwrap();
    c.commit(10);
    // Position 7 needs keys 4..7: still there. Position 6 needs 3..6: 3 is gone.
    assert!(c.check_truncate(7).is_ok());
    match c.check_truncate(6) {
        Err(CoreError::TruncateTooFar {
            requested: 6,
            layer: 0,
            oldest_kept: 4,
            needed_from: 3,
        }) => {}
        other => panic!("expected TruncateTooFar, got {other:?}"),
    }
    assert!(matches!(
        c.truncate(11),
        Err(CoreError::TruncateBeyondEnd {
            requested: 11,
            position: 10
        })
    ));
    assert_eq!(c.position(), 10);
    c.truncate(7).unwrap();
    assert_eq!(c.position(), 7);
    // Going back to 0 always works (nothing needed).
    c.truncate(0).unwrap();
    assert_eq!(c.position(), 0);
}

#[test]
fn overflow_is_an_error() {
    let mut c = cache(8);
    c.begin(8).unwrap();
    c.commit(8);
    match c.begin(1) {
        Err(CoreError::ContextFull {
            position: 8,
            requested: 1,
            ctx_len: 8,
        }) => {}
        other => panic!("expected ContextFull, got {other:?}"),
    }
    assert!(matches!(
        KvCache::new(&config(), 0, KvType::F16, 2, Ok::<usize, CoreError>),
        Err(CoreError::ContextLength { .. })
    ));
    assert!(matches!(
        KvCache::new(&config(), 65, KvType::F16, 2, Ok::<usize, CoreError>),
        Err(CoreError::ContextLength { .. })
    ));
    let mut odd = config();
    odd.head_dim_v = 48;
    assert!(matches!(
        KvCache::new(&odd, 8, KvType::Q8_0, 2, Ok::<usize, CoreError>),
        Err(CoreError::KvTypeUnsupported {
            block: 32,
            head_dim: 48,
            ..
        })
    ));
}

/// The tiny model with llama.cpp's `-fa off` rounding, which does not depend on the
/// batch size (its flash-attention rounding does, as llama.cpp's: batches of 64+ rows
/// take an f32 kernel, smaller ones an F16 accumulator), so that runs split differently
/// must agree to f32 rounding. The flash kernel's ring handling has its own unit test
/// (`backend::cpu::attention_flash`).
fn tiny(margin: usize, max_batch: usize) -> Model {
    let path = fixtures().join("tiny/tiny-gemma3-t1-f32.gguf");
    let options = ModelOptions {
        threads: 2,
        ring_margin: margin,
        max_batch,
        flash_attention: false,
        ..ModelOptions::default()
    };
    Model::load(path, options).expect("tiny model")
}

fn sequence() -> Vec<u32> {
    ids(&read_json(&fixtures().join("tiny/t1_reference.json"))["sequence"])
}

fn all_logits(model: &Model, tokens: &[u32], kv: KvType) -> Vec<f32> {
    let mut session = model.session(256, kv).expect("session");
    let mut all = Vec::new();
    session
        .prefill_each(tokens, |_, row| all.extend_from_slice(row))
        .expect("prefill");
    all
}

/// A ring of exactly the window (margin 0: one token per tile, wrapping every 8 tokens)
/// and a prefill split into chunks of 5 give the logits of the non-wrapping cache (up to
/// the order of f32 sums: a wrapped run of slots is two dot products instead of one, and
/// short tiles take the per-head attention instead of the matrix one, which T1's large
/// norms amplify to ~1e-2; any wrong slot or mask gives differences of several units).
#[test]
fn wrapping_ring_and_chunked_prefill_match_one_pass() {
    let seq = sequence();
    for kv in [KvType::F16, KvType::F32, KvType::Q8_0] {
        let plain = all_logits(&tiny(64, 512), &seq, kv);
        let wrapped = all_logits(&tiny(0, 512), &seq, kv);
        let chunked = all_logits(&tiny(3, 5), &seq, kv);
        // Rings of 24 slots, tiles of 17 queries: the matrix attention over wrapped slots.
        let tiled = all_logits(&tiny(16, 512), &seq, kv);
        let cases = [
            ("ring of 8 slots", &wrapped),
            ("chunks of 5", &chunked),
            ("ring of 24 slots", &tiled),
        ];
        for (what, other) in cases {
            let d = Diff::of(&plain, other, 512);
            println!("{kv} {what}: {d}");
            // Q8_0 keys and values re-quantize any difference in their inputs.
            let (max, mean) = if kv == KvType::Q8_0 {
                (0.15, 0.02)
            } else {
                (0.03, 0.003)
            };
            assert!(d.max_abs <= max && d.mean_abs <= mean, "{kv} {what}: {d}");
        }
    }
}

/// Going back a few tokens and feeding them again reproduces the logits; going back
/// further than the ring holds is refused and leaves the session usable.
#[test]
fn truncate_and_redo_in_a_session() {
    let seq = sequence();
    let model = tiny(4, 512); // rings of 12 slots for window 8: 5 tokens back always work
    let mut session = model.session(64, KvType::F16).expect("session");
    let mut reference = Vec::new();
    session
        .prefill_each(&seq[..40], |_, row| reference.extend_from_slice(row))
        .unwrap();
    assert_eq!(session.position(), 40);

    assert!(session.can_truncate(35));
    session.truncate(35).unwrap();
    assert!(session.logits().is_empty());
    let mut redo = Vec::new();
    session
        .prefill_each(&seq[35..40], |_, row| redo.extend_from_slice(row))
        .unwrap();
    // The redo runs 5 tokens where the reference ran 40: the kernels group tokens into
    // other tiles (another f32 summation order), so the logits agree to rounding only.
    let d = Diff::of(&reference[35 * 512..], &redo, 512);
    assert!(d.max_abs <= 5e-3, "redo after truncate: {d}");

    match session.truncate(20) {
        Err(CoreError::TruncateTooFar { requested: 20, .. }) => {}
        other => panic!("expected TruncateTooFar, got {other:?}"),
    }
    assert_eq!(session.position(), 40);
    let last = session.step(seq[40]).unwrap().to_vec();
    let mut fresh = model.session(64, KvType::F16).unwrap();
    let expected = fresh.prefill(&seq[..41]).unwrap();
    assert!(Diff::of(&last, expected, 512).max_abs <= 5e-3);
}

#[test]
fn session_overflow_and_bad_tokens_are_errors() {
    let model = tiny(64, 512);
    let seq = sequence();
    let mut session = model.session(16, KvType::F16).expect("session");
    assert!(matches!(
        session.prefill(&seq[..17]),
        Err(CoreError::ContextFull {
            position: 0,
            requested: 17,
            ctx_len: 16
        })
    ));
    assert_eq!(session.position(), 0);
    session.prefill(&seq[..16]).unwrap();
    assert!(matches!(
        session.step(5),
        Err(CoreError::ContextFull {
            position: 16,
            requested: 1,
            ctx_len: 16
        })
    ));
    let mut other = model.session(16, KvType::F16).unwrap();
    assert!(matches!(
        other.step(512),
        Err(CoreError::TokenOutOfRange {
            token: 512,
            n_vocab: 512
        })
    ));
    assert!(matches!(other.prefill(&[]), Err(CoreError::EmptyInput)));
    assert_eq!(other.position(), 0);
    assert!(matches!(
        model.session(257, KvType::F16),
        Err(CoreError::ContextLength {
            requested: 257,
            max: 256
        })
    ));
    // The cache size is reported: T1 has 6 local layers with rings of min(16, 8 + 64)
    // slots and 1 global layer of 16 slots; K and V rows are 2 heads x 64 f16 values.
    assert_eq!(session.kv_bytes(), (7 * 16 * 2 * 2 * 64 * 2) as u64);
}

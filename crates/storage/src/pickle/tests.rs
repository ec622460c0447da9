use super::*;
use crate::ids::Oid;
use serde_json::Value as J;
use sha2::{Digest, Sha256};

use testsupport::testdata;

const FILES: &[&str] = testsupport::PYTHON_DATABASES;

/// Does the decoded `v` match the generic description `g` of the test vectors?
fn matches(v: &Value, g: &J) -> bool {
    match g {
        J::Null => *v == Value::None,
        J::Bool(b) => *v == Value::Bool(*b),
        J::Number(n) => match (n.as_i64(), v) {
            (Some(i), Value::Int(x)) => i == *x,
            (None, Value::Float(f)) => Some(*f) == n.as_f64(),
            (Some(i), Value::Float(f)) => *f == i as f64,
            _ => false,
        },
        J::String(_) | J::Array(_) => false,
        J::Object(o) => {
            if let Some(s) = o.get("str") {
                return matches!(v, Value::Str(x) if Some(x.as_str()) == s.as_str());
            }
            if let Some(s) = o.get("py2str") {
                return matches!(v, Value::Py2Str(x) if Some(x.as_slice()) == s.as_str().map(str::as_bytes));
            }
            if let Some(h) = o.get("py2str_hex") {
                return matches!(v, Value::Py2Str(x) if Some(hex::encode(x)) == h.as_str().map(String::from));
            }
            if let Some(h) = o.get("bytes") {
                return matches!(v, Value::Bytes(x) if Some(hex::encode(x)) == h.as_str().map(String::from));
            }
            if let Some(J::Array(items)) = o.get("tuple") {
                return matches!(v, Value::Tuple(x) if x.len() == items.len() && x.iter().zip(items).all(|(a, b)| matches(a, b)));
            }
            if let Some(J::Array(items)) = o.get("list") {
                return matches!(v, Value::List(x) if x.len() == items.len() && x.iter().zip(items).all(|(a, b)| matches(a, b)));
            }
            if let Some(J::Array(pairs)) = o.get("dict") {
                let Value::Dict(x) = v else { return false };
                return x.len() == pairs.len()
                    && pairs.iter().all(|p| {
                        x.iter()
                            .any(|(k, val)| matches(k, &p[0]) && matches(val, &p[1]))
                    });
            }
            if let Some(kind) = o.get("ref").and_then(J::as_str) {
                let Value::PersistentRef(pid) = v else {
                    return false;
                };
                let oid = o.get("oid").and_then(J::as_str).and_then(Oid::from_hex);
                if v.ref_oid() != oid {
                    return false;
                }
                if let Some(c) = o.get("class").and_then(J::as_str)
                    && v.ref_class().as_deref() != Some(c)
                {
                    return false;
                }
                return match kind {
                    "oid+class" => matches!(pid.as_ref(), Value::Tuple(t) if t.len() == 2),
                    "oid" => pid.as_bytes().is_some(),
                    "weak" => matches!(pid.as_ref(), Value::List(l) if l[0].as_text() == Some("w")),
                    "xdb-oid+class" => {
                        matches!(pid.as_ref(), Value::List(l) if l[0].as_text() == Some("m"))
                    }
                    "xdb-oid" => {
                        matches!(pid.as_ref(), Value::List(l) if l[0].as_text() == Some("n"))
                    }
                    _ => false,
                };
            }
            if let Some(callable) = o.get("reduce").and_then(J::as_str) {
                let (red, build_state) = match v {
                    Value::Build { obj, state } => (obj.as_ref(), Some(state.as_ref())),
                    other => (other, None),
                };
                let Value::Reduce { callable: c, args } = red else {
                    return false;
                };
                let Some((m, n)) = c.as_global() else {
                    return false;
                };
                return format!("{m}.{n}") == callable
                    && matches(args, &o["args"])
                    && match (o.get("build_state"), build_state) {
                        (Some(g), Some(s)) => matches(s, g),
                        (None, None) => true,
                        _ => false,
                    };
            }
            false
        }
    }
}

/// Every record of every test database decodes; class, pickle split,
/// generic state and payload hashes agree with the JSON descriptions.
#[test]
fn every_vector_record_decodes_as_described() {
    let mut n_records = 0;
    let mut n_generic = 0;
    let mut n_payload = 0;
    for f in FILES {
        let fs = std::fs::read(testdata().join(format!("{f}.fs"))).expect("read .fs");
        let js: J = serde_json::from_slice(
            &std::fs::read(testdata().join(format!("{f}.json"))).expect("read .json"),
        )
        .expect("parse json");
        for t in js["transactions"].as_array().expect("txns") {
            for r in t["records"].as_array().expect("records") {
                let len = r["data_len"].as_u64().expect("data_len") as usize;
                if len == 0 {
                    continue;
                }
                let pos = r["pos"].as_u64().expect("pos") as usize + 42;
                let data = &fs[pos..pos + len];
                if let Some(h) = r.get("data_hex").and_then(J::as_str) {
                    assert_eq!(hex::encode(data), h, "{f} record at {pos}");
                }
                let ctx = format!("{f} oid {} at {pos}", r["oid"]);
                let (meta, state) = decode_record(data).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                let (_, class_len) = decode(data).expect("class pickle");
                assert_eq!(
                    Some(class_len as u64),
                    r["class_pickle_len"].as_u64(),
                    "{ctx}"
                );
                let (m, n) = class_of_meta(&meta).expect("class meta form");
                assert_eq!(
                    Some(format!("{m}.{n}").as_str()),
                    r["class"].as_str(),
                    "{ctx}"
                );
                assert_eq!(
                    record_class(data).expect("class").as_str(),
                    r["class"].as_str().unwrap_or("")
                );
                if let Some(g) = r.get("state_generic") {
                    assert!(matches(&state, g), "{ctx}: {state:?} !~ {g}");
                    n_generic += 1;
                }
                if let Some(sha) = r.get("sha256").and_then(J::as_str) {
                    let payload = state.as_bytes().expect("payload bytes");
                    assert_eq!(Some(payload.len() as u64), r["bytes_len"].as_u64(), "{ctx}");
                    assert_eq!(hex::encode(Sha256::digest(payload)), sha, "{ctx}");
                    let want_py2 = r["data_pickle_type"].as_str() == Some("py2-str");
                    assert_eq!(matches!(state, Value::Py2Str(_)), want_py2, "{ctx}");
                    n_payload += 1;
                }
                if let Some(c) = r.get("chunktab_oid").and_then(J::as_str) {
                    assert_eq!(
                        state.ref_oid(),
                        Oid::from_hex(c),
                        "{ctx}: ZBlk1 state is a ref"
                    );
                }
                n_records += 1;
            }
        }
    }
    assert!(n_records > 150, "{n_records}");
    assert!(n_generic > 30, "{n_generic}");
    assert!(n_payload >= 130, "{n_payload}");
}

#[test]
fn shared_memo_between_class_and_state_pickles() {
    // class pickle memoizes the GLOBAL as 0; state refers to it with BINGET 0.
    let mut rec = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.".to_vec();
    rec.extend_from_slice(b"\x80\x03h\x00.");
    let (meta, state) = decode_record(&rec).expect("decode");
    assert_eq!(meta, state);
    // A fresh decoder for the state alone cannot resolve it.
    let e = decode(b"\x80\x03h\x00.").expect_err("memo");
    assert!(e.to_string().contains("memo key 0 never stored"), "{e}");
}

#[test]
fn memo_sees_later_mutations_of_containers() {
    // EMPTY_LIST PUT 0, APPEND 1, then a tuple (GET 0, GET 0) -> both see [1].
    let p = b"\x80\x02]q\x00K\x01ah\x00\x86.";
    let (v, _) = decode(p).expect("decode");
    let l = Value::List(vec![Value::Int(1)]);
    assert_eq!(v, Value::Tuple(vec![l.clone(), l]));
}

#[test]
fn protocol_0_and_1_forms() {
    // INT bools, INT/LONG text big ints, STRING with escapes, UNICODE escapes,
    // FLOAT text, MARK tuple, DICT, LIST, GET/PUT text, PERSID, INST.
    let p = b"(I01\nI00\nI8589934592\nL-123456789012345678901234567890L\nS'a\\'b\\x00\\n'\nVcaf\\u00e9\nF1.5\nt.";
    let (v, n) = decode(p).expect("decode");
    assert_eq!(n, p.len());
    let Value::Tuple(items) = v else {
        panic!("not a tuple: {v:?}")
    };
    assert_eq!(items[0], Value::Bool(true));
    assert_eq!(items[1], Value::Bool(false));
    assert_eq!(items[2], Value::Int(8_589_934_592));
    let Value::BigInt(b) = &items[3] else {
        panic!("{:?}", items[3])
    };
    // check the magnitude via re-encoding: -123456789012345678901234567890
    let mut mag = b.clone();
    let mut carry = 1u16;
    for x in mag.iter_mut() {
        let y = u16::from(!*x) + carry;
        *x = y as u8;
        carry = y >> 8;
    }
    let mut dec = 0u128;
    for x in mag.iter().rev() {
        dec = dec * 256 + u128::from(*x);
    }
    assert_eq!(dec, 123_456_789_012_345_678_901_234_567_890);
    assert_eq!(items[4], Value::Py2Str(b"a'b\0\n".to_vec()));
    assert_eq!(items[5], Value::Str("café".into()));
    assert_eq!(items[6], Value::Float(1.5));

    let p = b"((dp0\nS'k'\np1\n(lp2\nI1\naI2\nasS'j'\nPabc\nsg2\nimod\nCls\nS'x'\nb.";
    let (v, _) = decode(p).expect("decode");
    let Value::Build { obj, state } = v else {
        panic!("{v:?}")
    };
    assert_eq!(*state, Value::Py2Str(b"x".to_vec()));
    let Value::NewObj { cls, args } = *obj else {
        panic!()
    };
    assert_eq!(cls.as_global(), Some(("mod", "Cls")));
    let Value::Tuple(a) = *args else { panic!() };
    assert_eq!(a.len(), 2);
    let l = Value::List(vec![Value::Int(1), Value::Int(2)]);
    assert_eq!(a[0].dict_get("k"), Some(&l));
    let r = a[0].dict_get("j").expect("j");
    assert_eq!(
        r,
        &Value::PersistentRef(Box::new(Value::Py2Str(b"abc".to_vec())))
    );
    assert_eq!(a[1], l, "GET 2 fetches the list memoized by PUT 2");
}

#[test]
fn bad_input_is_an_error_naming_opcode_and_offset() {
    let e = decode(b"\x80\x03\x82\x01.").expect_err("ext1");
    let s = e.to_string();
    assert!(s.contains("EXT1") && s.contains("byte 2"), "{s}");
    let e = decode(b"\x80\x03\xff.").expect_err("unknown");
    assert!(e.to_string().contains("0xff"), "{e}");
    // length larger than the input: rejected before allocating
    let e = decode(b"\x80\x03B\xff\xff\xff\x7fab.").expect_err("len");
    assert!(e.to_string().contains("exceeds"), "{e}");
    let e = decode(b"\x80\x03").expect_err("eof");
    assert!(e.to_string().contains("without STOP"), "{e}");
    let e = decode(b"t.").expect_err("no mark");
    assert!(e.to_string().contains("MARK"), "{e}");
    let e = decode(b"0.").expect_err("underflow");
    assert!(e.to_string().contains("underflow"), "{e}");
    let e = decode_record(b"xyz").expect_err("wrapped");
    assert!(e.to_string().contains("0x78"), "{e}");
    // a record with trailing garbage after the state pickle
    let mut rec = encode_record("m", "C", &Value::None, Dialect::Py3).expect("enc");
    rec.push(0);
    assert!(decode_record(&rec).is_err());
}

#[test]
fn deep_nesting_is_bounded() {
    let mut p = b"\x80\x03N".to_vec();
    p.extend(std::iter::repeat_n(0x85u8, 100_000));
    p.push(b'.');
    let e = decode(&p).expect_err("deep");
    assert!(e.to_string().contains("nested deeper"), "{e}");
    let mut v = Value::None;
    for _ in 0..(MAX_DEPTH + 5) {
        v = Value::Tuple(vec![v]);
    }
    assert!(encode(&v, Dialect::Py3).is_err());
}

#[test]
fn memo_expansion_is_bounded() {
    // "billion laughs": each step builds a pair of the previous value twice.
    let mut p = b"\x80\x03]q\x00".to_vec();
    for _ in 0..60 {
        p.extend_from_slice(b"h\x00h\x00\x86q\x00");
    }
    p.push(b'.');
    let t = std::time::Instant::now();
    let e = decode(&p).expect_err("expansion");
    assert!(e.to_string().contains("memo reuse"), "{e}");
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
    // appending one item at a time to a memoized list stays linear
    let mut p = b"\x80\x03]q\x00".to_vec();
    for _ in 0..200_000 {
        p.extend_from_slice(b"Na");
    }
    p.push(b'.');
    let t = std::time::Instant::now();
    let (v, _) = decode(&p).expect("list");
    assert_eq!(v.as_seq().map(<[Value]>::len), Some(200_000));
    assert!(
        t.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn encoded_record_has_the_documented_bytes() {
    // FORMATS.md §2.15: the root record of tiny.fs
    let state = Value::Dict(vec![(Value::Str("data".into()), Value::Dict(vec![]))]);
    let rec = encode_record(
        "persistent.mapping",
        "PersistentMapping",
        &state,
        Dialect::Py3,
    )
    .expect("enc");
    let mut want = b"\x80\x03cpersistent.mapping\nPersistentMapping\n.".to_vec();
    want.extend_from_slice(b"\x80\x03}X\x04\x00\x00\x00data}s.");
    assert_eq!(rec, want);
}

#[test]
fn ints_round_trip_at_every_width_boundary() {
    for i in [
        0i64,
        1,
        255,
        256,
        65535,
        65536,
        -1,
        -128,
        -129,
        i64::from(i32::MAX),
        i64::from(i32::MAX) + 1,
        i64::from(i32::MIN),
        i64::from(i32::MIN) - 1,
        i64::MAX,
        i64::MIN,
    ] {
        for d in [Dialect::Py3, Dialect::Py2] {
            let p = encode(&Value::Int(i), d).expect("enc");
            assert_eq!(decode(&p).expect("dec").0, Value::Int(i), "{i}");
        }
    }
}

mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn leaf(dialect: Dialect) -> BoxedStrategy<Value> {
        let data = proptest::collection::vec(any::<u8>(), 0..300);
        prop_oneof![
            Just(Value::None),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            // canonical big ints: longer than 8 bytes and minimal
            proptest::collection::vec(any::<u8>(), 9..40).prop_filter_map("minimal", |b| {
                match super::super::decode::long_from_le(&b) {
                    v @ Value::BigInt(_) => Some(v),
                    _ => None,
                }
            }),
            any::<f64>()
                .prop_filter("nan never equals", |f| !f.is_nan())
                .prop_map(Value::Float),
            data.prop_map(move |b| match dialect {
                Dialect::Py3 => Value::Bytes(b),
                Dialect::Py2 => Value::Py2Str(b),
            }),
            ".{0,40}".prop_map(Value::Str),
            ("[a-z_][a-z0-9_.]{0,20}", "[A-Za-z_][A-Za-z0-9_]{0,20}")
                .prop_map(|(m, n)| Value::global(&m, &n)),
            any::<u64>().prop_map(move |o| {
                let oid = Oid(o).to_bytes().to_vec();
                let oid = match dialect {
                    Dialect::Py3 => Value::Bytes(oid),
                    Dialect::Py2 => Value::Py2Str(oid),
                };
                Value::PersistentRef(Box::new(Value::Tuple(vec![
                    oid,
                    Value::global("wendelin.bigfile.file_zodb", "ZBlk0"),
                ])))
            }),
        ]
        .boxed()
    }

    fn tree(dialect: Dialect) -> impl Strategy<Value = Value> {
        leaf(dialect).prop_recursive(5, 200, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Tuple),
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
                proptest::collection::vec((inner.clone(), inner.clone()), 0..6)
                    .prop_map(Value::Dict),
                (inner.clone(), inner.clone()).prop_map(|(c, a)| Value::Reduce {
                    callable: Box::new(c),
                    args: Box::new(a)
                }),
                (inner.clone(), inner.clone()).prop_map(|(o, s)| Value::Build {
                    obj: Box::new(o),
                    state: Box::new(s)
                }),
                (inner.clone(), inner.clone()).prop_map(|(c, a)| Value::NewObj {
                    cls: Box::new(c),
                    args: Box::new(a)
                }),
                inner.prop_map(|p| Value::PersistentRef(Box::new(p))),
            ]
        })
    }

    proptest! {
        #[test]
        fn py3_value_trees_survive_encode_decode(v in tree(Dialect::Py3)) {
            let p = encode(&v, Dialect::Py3).expect("encode");
            let (back, n) = decode(&p).expect("decode");
            prop_assert_eq!(n, p.len());
            prop_assert_eq!(back, v);
        }

        #[test]
        fn py2_value_trees_survive_encode_decode(v in tree(Dialect::Py2)) {
            let p = encode(&v, Dialect::Py2).expect("encode");
            let (back, _) = decode(&p).expect("decode");
            prop_assert_eq!(back, v);
        }

        #[test]
        fn records_survive_encode_decode(v in tree(Dialect::Py3)) {
            let rec = encode_record("some.module", "Klass", &v, Dialect::Py3).expect("encode");
            prop_assert_eq!(record_class(&rec).expect("class"), "some.module.Klass");
            let (_, state) = decode_record(&rec).expect("decode");
            prop_assert_eq!(state, v);
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&data);
            let _ = decode_record(&data);
        }
    }
}

#[test]
fn bytes_record_parts_match_encode_record() {
    for dialect in [Dialect::Py3, Dialect::Py2] {
        for len in [0usize, 1, 255, 256, 4096, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let whole = encode_record(
                "wendelin.bigfile.file_zodb",
                "ZBlk0",
                &Value::Bytes(payload.clone()),
                dialect,
            )
            .expect("encode");
            let (head, tail) =
                encode_bytes_record_parts("wendelin.bigfile.file_zodb", "ZBlk0", len, dialect)
                    .expect("parts");
            let joined = [head.as_slice(), &payload, tail].concat();
            assert_eq!(joined, whole, "{dialect:?} len {len}");
        }
    }
}

/// Padding of every length a writer may insert (0, 2..=4095, 4097, and
/// more) reads as the unpadded record, is exactly that long, and is
/// skipped by the readers that locate a payload without decoding.
#[test]
fn padded_bytes_records_read_as_unpadded() {
    const M: &str = "wendelin.bigfile.file_zodb";
    for dialect in [Dialect::Py3, Dialect::Py2] {
        let payload: Vec<u8> = (0..300u32).map(|i| (i % 253) as u8).collect();
        let want = decode_record(
            &encode_record(M, "ZBlk0", &Value::Bytes(payload.clone()), dialect).expect("encode"),
        )
        .expect("decode");
        let head0 = encode_bytes_record_head(M, "ZBlk0", payload.len(), 0, dialect).expect("head");
        let mut reader = BytesStateReader::default();
        for n in (0..=8200).filter(|&n| n != 1) {
            let head =
                encode_bytes_record_head(M, "ZBlk0", payload.len(), n, dialect).expect("head");
            assert_eq!(head.len(), head0.len() + n, "{dialect:?} pad {n}");
            let rec = [head.as_slice(), &payload, b"."].concat();
            assert_eq!(
                decode_record(&rec).expect("decode padded"),
                want,
                "{dialect:?} pad {n}"
            );
            let (l, p) = bytes_state(&rec).expect("fast path");
            assert_eq!(
                (l.offset, p),
                (head.len(), payload.as_slice()),
                "{dialect:?} pad {n}"
            );
            let (_, _, r) = reader.payload(&rec).expect("reader");
            assert_eq!(r, head.len()..head.len() + payload.len());
            if n <= MAX_PADDING {
                let l =
                    bytes_state_layout(&rec[..BYTES_STATE_HEAD.min(rec.len())]).expect("layout");
                assert_eq!((l.offset, l.len), (head.len(), payload.len() as u64));
            }
        }
        assert!(encode_bytes_record_head(M, "ZBlk0", 10, 1, dialect).is_err());
        assert!(!push_padding(&mut Vec::new(), 1, dialect));
    }
}

/// A head cut inside the padding is never mistaken for a plain record:
/// whatever layout it yields, the whole record's tail check refutes it.
#[test]
fn truncated_padding_is_not_a_payload() {
    let payload = vec![7u8; 5000];
    let head = encode_bytes_record_head("m", "C", payload.len(), 3000, Dialect::Py3).expect("head");
    let rec = [head.as_slice(), &payload, b"."].concat();
    for cut in [40, 100, 2000, head.len() - 1] {
        if let Some(l) = bytes_state_layout(&rec[..cut]) {
            let end = l.offset + l.len as usize;
            assert!(
                !rec.get(end..).is_some_and(is_bytes_state_tail),
                "cut {cut}"
            );
        }
    }
}

#[test]
fn padding_to_align_lands_on_the_boundary() {
    for at in 0..3 * 4096u64 {
        let pad = padding_to_align(at, 4096);
        assert_ne!(pad, 1);
        assert!(pad <= MAX_PADDING);
        assert_eq!((at + pad as u64) % 4096, 0, "at {at}");
    }
}

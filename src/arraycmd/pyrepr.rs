//! Plain root values shown as Python's `repr` shows them.
//!
//! `ls` lists every root entry; entries that are not persistent objects are
//! plain pickled values (numbers, strings, containers). Users know them from
//! Python, so they are printed the way Python prints them (`42`, `'text'`,
//! `{'a': 1}`), cut to a short width, not as the Rust enum they decode to.

use storage::Value;

/// Python's `repr` of `v`, at most `max` characters (then `...`).
pub fn py_repr(v: &Value, max: usize) -> String {
    let mut s = String::new();
    write(v, &mut s, max);
    if s.chars().count() > max {
        s = s.chars().take(max.saturating_sub(3)).collect::<String>() + "...";
    }
    s
}

fn write(v: &Value, s: &mut String, max: usize) {
    if s.len() > max {
        return;
    }
    match v {
        Value::None => s.push_str("None"),
        Value::Bool(b) => s.push_str(if *b { "True" } else { "False" }),
        Value::Int(i) => s.push_str(&i.to_string()),
        Value::BigInt(b) => s.push_str(&format!("<int of {} bytes>", b.len())),
        Value::Float(f) => s.push_str(&float(*f)),
        Value::Bytes(b) | Value::Py2Str(b) => bytes(b, s),
        Value::Str(t) => s.push_str(&format!(
            "'{}'",
            t.replace('\\', "\\\\").replace('\'', "\\'")
        )),
        Value::Tuple(xs) => {
            s.push('(');
            seq(xs, s, max);
            if xs.len() == 1 {
                s.push(',');
            }
            s.push(')');
        }
        Value::List(xs) => {
            s.push('[');
            seq(xs, s, max);
            s.push(']');
        }
        Value::Dict(kv) => {
            s.push('{');
            for (i, (k, v)) in kv.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                write(k, s, max);
                s.push_str(": ");
                write(v, s, max);
            }
            s.push('}');
        }
        Value::Global { module, name } => s.push_str(&format!("<class '{module}.{name}'>")),
        other => s.push_str(&format!("<{}>", kind(other))),
    }
}

fn seq(xs: &[Value], s: &mut String, max: usize) {
    for (i, x) in xs.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        write(x, s, max);
    }
}

fn float(f: f64) -> String {
    if f.is_nan() {
        "nan".into()
    } else if f.is_infinite() {
        if f > 0.0 { "inf" } else { "-inf" }.into()
    } else if f == f.trunc() && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

fn bytes(b: &[u8], s: &mut String) {
    s.push_str("b'");
    for &c in b {
        match c {
            b'\\' => s.push_str("\\\\"),
            b'\'' => s.push_str("\\'"),
            b'\n' => s.push_str("\\n"),
            0x20..=0x7e => s.push(char::from(c)),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push('\'');
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::PersistentRef(_) => "persistent reference",
        Value::Reduce { .. } => "reduce",
        _ => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_print_as_python() {
        assert_eq!(py_repr(&Value::Int(42), 40), "42");
        assert_eq!(py_repr(&Value::Str("text".into()), 40), "'text'");
        assert_eq!(py_repr(&Value::Float(2.0), 40), "2.0");
        assert_eq!(py_repr(&Value::Bytes(b"a\x00".to_vec()), 40), "b'a\\x00'");
        assert_eq!(py_repr(&Value::Tuple(vec![Value::Int(1)]), 40), "(1,)");
        assert_eq!(
            py_repr(
                &Value::Dict(vec![(Value::Str("a".into()), Value::None)]),
                40
            ),
            "{'a': None}"
        );
        assert_eq!(py_repr(&Value::Str("x".repeat(100)), 10), "'xxxxxx...");
    }
}

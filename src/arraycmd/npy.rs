//! The .npy format of `import` and `export`: reading and checking a
//! header (version 1 to 3, the keys numpy writes, nothing else: the header
//! comes from the user's file) and writing one as numpy does (version 1,
//! padded to a multiple of 64 bytes).

use std::io::Read;

use super::e;

type R<T> = Result<T, String>;

/// An .npy header.
#[derive(Debug, Clone, PartialEq)]
pub struct Npy {
    /// dtype string.
    pub descr: String,
    /// True for Fortran order.
    pub fortran: bool,
    /// Shape.
    pub shape: Vec<usize>,
    /// Offset of the data.
    pub data_offset: u64,
}

/// Parse the header of an .npy file.
pub fn read_npy_header(r: &mut impl Read) -> R<Npy> {
    let mut pre = [0u8; 8];
    r.read_exact(&mut pre)
        .map_err(|x| format!("not an .npy file: {x}"))?;
    if &pre[..6] != b"\x93NUMPY" {
        return Err("not an .npy file (bad magic)".into());
    }
    let (hlen, off) = match pre[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).map_err(e)?;
            (u64::from(u16::from_le_bytes(b)), 10)
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(e)?;
            (u64::from(u32::from_le_bytes(b)), 12)
        }
        v => return Err(format!(".npy version {v} is not supported")),
    };
    if hlen > 1 << 20 {
        return Err(format!(".npy header of {hlen} bytes is too long"));
    }
    let mut h = vec![0u8; hlen as usize];
    r.read_exact(&mut h)
        .map_err(|x| format!(".npy header truncated: {x}"))?;
    let h = String::from_utf8(h).map_err(|_| ".npy header is not text".to_string())?;
    check_npy_keys(&h)?;
    let field = |k: &str| -> R<String> {
        let i = h
            .find(&format!("'{k}'"))
            .ok_or_else(|| format!(".npy header has no {k}"))?;
        Ok(h[i + k.len() + 2..]
            .trim_start()
            .trim_start_matches(':')
            .trim_start()
            .to_owned())
    };
    let descr = field("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or_else(|| "bad descr in .npy header".to_string())?
        .to_owned();
    let fo = field("fortran_order")?;
    let fortran = if fo.starts_with("True") {
        true
    } else if fo.starts_with("False") {
        false
    } else {
        return Err(format!(
            "bad fortran_order in .npy header (must be True or False): {}",
            fo.chars().take(20).collect::<String>()
        ));
    };
    let sh = field("shape")?;
    let inner = sh
        .strip_prefix('(')
        .and_then(|x| x.split(')').next())
        .ok_or_else(|| "bad shape in .npy header".to_string())?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.parse::<usize>()
                .map_err(|_| format!("bad shape {inner:?} in .npy header"))
        })
        .collect::<R<Vec<_>>>()?;
    Ok(Npy {
        descr,
        fortran,
        shape,
        data_offset: off + hlen,
    })
}

/// The header dict must have exactly the keys numpy writes: `descr`,
/// `fortran_order`, `shape` (numpy refuses others too).
fn check_npy_keys(h: &str) -> R<()> {
    let body = h.trim();
    let body = body
        .strip_prefix('{')
        .and_then(|b| b.rfind('}').map(|i| &b[..i]))
        .ok_or_else(|| ".npy header is not a dict".to_string())?;
    // Keys are the quoted strings directly after `{` or a top-level `,`.
    let mut depth = 0i32;
    let mut in_str: Option<char> = None;
    let mut at_key = true;
    let mut keys = Vec::new();
    let mut cur = String::new();
    for ch in body.chars() {
        if let Some(q) = in_str {
            if ch == q {
                in_str = None;
                if at_key && depth == 0 {
                    keys.push(std::mem::take(&mut cur));
                    at_key = false;
                }
            } else if at_key && depth == 0 {
                cur.push(ch);
            }
            continue;
        }
        match ch {
            '\'' | '"' => in_str = Some(ch),
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => at_key = true,
            ':' if depth == 0 => at_key = false,
            c if c.is_whitespace() => {}
            _ if at_key && depth == 0 => {
                return Err(".npy header: a key is not a string".into());
            }
            _ => {}
        }
    }
    for k in &keys {
        if !["descr", "fortran_order", "shape"].contains(&k.as_str()) {
            return Err(format!(".npy header has an unknown key {k:?}"));
        }
    }
    if keys.len() != 3 {
        return Err(format!(
            ".npy header must have descr, fortran_order and shape, has {keys:?}"
        ));
    }
    Ok(())
}

pub(super) fn npy_header(descr: &str, fortran: bool, shape: &[usize]) -> Vec<u8> {
    let sh = match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {sh}, }}",
        if fortran { "True" } else { "False" }
    );
    let total = 10 + dict.len() + 1;
    let pad = (64 - total % 64) % 64;
    dict.push_str(&" ".repeat(pad));
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

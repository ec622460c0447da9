//! Benchmarks of the virtmem crate: a file of 2 MiB blocks in the OS page
//! cache (1 GiB by default, `--size-mib`), read and written through a
//! `FileH`, each figure beside a baseline measured in the same run.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use virtmem::{BigFile, FileBigFile, FileH, Options, Writeout};

use crate::common::{Config, Report, timed};

const BS: usize = 2 << 20;

fn sum_words(w: &[u64]) -> u64 {
    // Four independent lanes so the loop runs at memory speed.
    let mut acc = [0u64; 4];
    let mut chunks = w.chunks_exact(4);
    for c in &mut chunks {
        for i in 0..4 {
            acc[i] = acc[i].wrapping_add(c[i]);
        }
    }
    let tail: u64 = chunks.remainder().iter().fold(0, |a, &x| a.wrapping_add(x));
    acc.iter().fold(tail, |a, &x| a.wrapping_add(x))
}

fn words_of(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_ne_bytes(a)
        })
        .collect()
}

fn block_data(blk: u64) -> Vec<u8> {
    let mut x = blk.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(BS);
    while v.len() < BS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_ne_bytes());
    }
    v
}

fn write_file(path: &Path, nblocks: u64) -> Result<(), String> {
    let mut f = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for b in 0..nblocks {
        f.write_all(&block_data(b)).map_err(|e| e.to_string())?;
    }
    f.sync_all().map_err(|e| e.to_string())
}

/// pread the whole range `[from, to)` of blocks into a buffer and sum it.
fn pread_scan(f: &File, from: u64, to: u64) -> Result<u64, String> {
    let mut buf = vec![0u8; BS];
    let mut words = vec![0u64; BS / 8];
    let mut s = 0u64;
    for b in from..to {
        f.read_exact_at(&mut buf, b * BS as u64)
            .map_err(|e| e.to_string())?;
        for (w, c) in words.iter_mut().zip(buf.chunks_exact(8)) {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            *w = u64::from_ne_bytes(a);
        }
        s = s.wrapping_add(sum_words(&words));
    }
    Ok(s)
}

/// A read-only mapping of a whole file (baseline: the kernel's own paging).
struct FileMap {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: a read-only shared mapping of a file; reading it from any thread is fine.
unsafe impl Sync for FileMap {}

impl FileMap {
    fn new(f: &File, len: usize) -> Result<FileMap, String> {
        // SAFETY: fresh read-only shared mapping of an open file at a
        // kernel-chosen address; nothing else is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        Ok(FileMap { ptr, len })
    }

    fn words(&self) -> &[u64] {
        // SAFETY: the mapping is `len` bytes, page aligned (so u64 aligned),
        // readable, and the file is not truncated while the map lives.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u64>(), self.len / 8) }
    }
}

impl Drop for FileMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly our mapping; no slice of it outlives `self`.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// Scan `words` with `threads` threads (contiguous parts); returns the sum.
fn par_sum(words: &[u64], threads: usize) -> u64 {
    if threads <= 1 {
        return sum_words(words);
    }
    let part = words.len().div_ceil(threads);
    std::thread::scope(|s| {
        let hs: Vec<_> = words
            .chunks(part)
            .map(|c| s.spawn(move || sum_words(c)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or(0))
            .fold(0u64, u64::wrapping_add)
    })
}

fn open_handle(file: Arc<FileBigFile>, size: u64, readahead: bool) -> Result<FileH, String> {
    open_handle_with(file, size, readahead, true, size + (64 << 20))
}

/// `zero_copy: false`: every load copies (`UFFDIO_COPY`), the path used when
/// the kernel lacks `UFFDIO_MOVE`.
fn open_handle_with(
    file: Arc<FileBigFile>,
    size: u64,
    readahead: bool,
    zero_copy: bool,
    budget: u64,
) -> Result<FileH, String> {
    let opts = Options {
        reserve: size,
        budget: Some(budget),
        readahead,
        zero_copy,
        ..Options::default()
    };
    FileH::open(file as Arc<dyn BigFile>, opts).map_err(|e| e.to_string())
}

/// Run this group.
pub fn run(cfg: &Config, report: &mut Report) -> Result<(), String> {
    let size = (cfg.size_mib << 20).max(BS as u64 * 4) / BS as u64 * BS as u64;
    let nblocks = size / BS as u64;
    let path = cfg
        .dir
        .join(format!("virtmem-bench-{}.dat", std::process::id()));
    let wpath = cfg
        .dir
        .join(format!("virtmem-bench-w-{}.dat", std::process::id()));
    let r = run_inner(cfg, report, size, nblocks, &path, &wpath);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&wpath);
    r
}

fn run_inner(
    cfg: &Config,
    report: &mut Report,
    size: u64,
    nblocks: u64,
    path: &Path,
    wpath: &Path,
) -> Result<(), String> {
    eprintln!(
        "virtmem: {} MiB file of 2 MiB blocks at {}",
        size >> 20,
        path.display()
    );
    write_file(path, nblocks)?;
    let f = File::open(path).map_err(|e| e.to_string())?;
    // Warm the page cache, and learn the expected sum.
    let want = pread_scan(&f, 0, nblocks)?;
    let file = Arc::new(FileBigFile::open(path, BS).map_err(|e| e.to_string())?);
    let check = |name: &str, got: u64| -> Result<(), String> {
        if got == want {
            Ok(())
        } else {
            Err(format!("{name}: checksum {got:#x} != {want:#x}"))
        }
    };

    // Warm-up before each cold figure of ours: one throwaway scan through a
    // handle, right before. On this VM, guest memory that was not used for a
    // while (never touched, or freed and reported back to the host) costs
    // several times more on first use (host-side faults); the warm-up makes
    // the freshly freed pages the ones the measured scan reuses.
    let warm = |zero_copy: bool| -> Result<(), String> {
        let fh = open_handle_with(file.clone(), size, true, zero_copy, size + (64 << 20))?;
        let v = fh
            .view::<u64>(0, size as usize / 8)
            .map_err(|e| e.to_string())?;
        check("warm-up scan", par_sum(&v, 2))
    };

    // Our 1-thread cold scan times (read-ahead on, off), for the 2-thread ratios.
    let mut t_one = (0.0, 0.0);
    for threads in [1usize, 2] {
        // Baselines: pread into a buffer, and a fresh mmap of the file.
        let (s, t_pread) = timed(|| -> Result<u64, String> {
            if threads == 1 {
                return pread_scan(&f, 0, nblocks);
            }
            let half = nblocks / 2;
            std::thread::scope(|sc| {
                let a = sc.spawn(|| pread_scan(&f, 0, half));
                let b = pread_scan(&f, half, nblocks)?;
                let a = a
                    .join()
                    .map_err(|_| "pread thread panicked".to_string())??;
                Ok(a.wrapping_add(b))
            })
        });
        check("pread", s?)?;
        let map = FileMap::new(&f, size as usize)?;
        let (s, t_mmap) = timed(|| par_sum(map.words(), threads));
        check("mmap", s)?;
        let (s, t_mmap_warm) = timed(|| par_sum(map.words(), threads));
        check("mmap rescan", s)?;
        drop(map);

        // Ours: a fresh handle (nothing resident), read-ahead on.
        warm(true)?;
        let fh = open_handle(file.clone(), size, true)?;
        let v = fh
            .view::<u64>(0, size as usize / 8)
            .map_err(|e| e.to_string())?;
        let (s, t_ours) = timed(|| par_sum(&v, threads));
        check("virtmem scan", s)?;
        let (s, t_rescan) = timed(|| par_sum(&v, threads));
        check("virtmem rescan", s)?;
        let st = fh.stats();
        drop(fh);
        eprintln!(
            "  ({threads} thr: {} demand loads, {} read-ahead loads, {} marker hits, {} moved, {} recycled, fresh pages {} us/MiB)",
            st.loads,
            st.readahead_loads,
            st.marker_hits,
            st.moved_loads,
            st.recycled,
            st.fresh_pages_ns_per_mib / 1000
        );

        // The same with the copy path (UFFDIO_COPY, the fallback).
        warm(false)?;
        let fh = open_handle_with(file.clone(), size, true, false, size + (64 << 20))?;
        let v = fh
            .view::<u64>(0, size as usize / 8)
            .map_err(|e| e.to_string())?;
        let (s, t_copy) = timed(|| par_sum(&v, threads));
        check("virtmem scan (copy path)", s)?;
        drop(fh);

        let tn = format!("{threads} thr");
        report.throughput(
            &format!("virtmem cold scan {tn}"),
            size,
            t_ours,
            &format!("virtmem {tn}, copy path (UFFDIO_COPY)"),
            t_copy,
        );
        report.throughput(
            &format!("virtmem cold scan {tn}"),
            size,
            t_ours,
            &format!("pread 2MiB+sum {tn}"),
            t_pread,
        );
        report.throughput(
            &format!("virtmem cold scan {tn}"),
            size,
            t_ours,
            &format!("mmap file (page cache) {tn}"),
            t_mmap,
        );
        report.throughput(
            &format!("virtmem rescan resident {tn}"),
            size,
            t_rescan,
            &format!("mmap rescan {tn}"),
            t_mmap_warm,
        );

        if threads == 1 {
            // Read-ahead effect: the same cold scan with read-ahead off.
            warm(true)?;
            let fh = open_handle(file.clone(), size, false)?;
            let v = fh
                .view::<u64>(0, size as usize / 8)
                .map_err(|e| e.to_string())?;
            let (s, t_nora) = timed(|| par_sum(&v, 1));
            check("virtmem scan no readahead", s)?;
            drop(fh);
            report.throughput(
                "virtmem cold scan 1 thr (read-ahead on)",
                size,
                t_ours,
                "virtmem, read-ahead off",
                t_nora,
            );
            t_one = (t_ours, t_nora);
        } else {
            // Scaling: on 2 cores read-ahead already puts the second core to
            // work for one reader, so both ratios are shown.
            report.throughput(
                "virtmem cold scan 2 thr",
                size,
                t_ours,
                "virtmem 1 thr (read-ahead on)",
                t_one.0,
            );
            report.throughput(
                "virtmem cold scan 2 thr",
                size,
                t_ours,
                "virtmem 1 thr, read-ahead off",
                t_one.1,
            );
        }
    }

    // Scans under a 64 MiB budget (the file is 16x larger): blocks are
    // evicted all along, as for files larger than RAM. Zero-copy (with
    // recycling of evicted blocks' pages) vs the copy path.
    let small = 64u64 << 20;
    for threads in [1usize, 2] {
        let mut t = [0.0f64; 2];
        for (i, zero_copy) in [true, false].into_iter().enumerate() {
            let fh = open_handle_with(file.clone(), size, true, zero_copy, small)?;
            let v = fh
                .view::<u64>(0, size as usize / 8)
                .map_err(|e| e.to_string())?;
            let (s, dt) = timed(|| par_sum(&v, threads));
            check("virtmem scan, 64 MiB budget", s)?;
            if zero_copy {
                let st = fh.stats();
                eprintln!(
                    "  (64 MiB budget, {threads} thr: {} evictions, {} recycled, {} moved)",
                    st.evictions, st.recycled, st.moved_loads
                );
            }
            t[i] = dt;
        }
        report.throughput(
            &format!("virtmem scan, 64 MiB budget, {threads} thr"),
            size,
            t[0],
            "the same, copy path (UFFDIO_COPY)",
            t[1],
        );
    }

    // Handle open+close (per-handle handler threads) vs one block's cold fault.
    let fh = open_handle(file.clone(), size, false)?;
    let (_, t_fault) = timed(|| {
        fh.view::<u64>(0, 1)
            .map(|v| std::hint::black_box(v[0]))
            .unwrap_or(0)
    });
    drop(fh);
    let reps = 50;
    let (r, t_open) = timed(|| -> Result<(), String> {
        for _ in 0..reps {
            drop(open_handle(file.clone(), size, true)?);
        }
        Ok(())
    });
    r?;
    report.time_ms(
        "virtmem open+close handle (own threads)",
        t_open / reps as f64,
        "cold fault of one 2 MiB block",
        t_fault,
    );

    // Writes: fill a new file through a view, then writeout + fsync, vs
    // write() + fsync of the same bytes.
    let wsize = if cfg.quick { size } else { size.min(512 << 20) };
    let wblocks = wsize / BS as u64;
    let raw: Vec<Vec<u8>> = (0..4).map(block_data).collect();
    let datas: Vec<Vec<u64>> = raw.iter().map(|b| words_of(b)).collect();
    let baseline = || -> Result<f64, String> {
        let _ = std::fs::remove_file(wpath);
        let (r, t) = timed(|| -> Result<(), String> {
            let mut wf = File::create(wpath).map_err(|e| e.to_string())?;
            for b in 0..wblocks {
                wf.write_all(&raw[(b % 4) as usize])
                    .map_err(|e| e.to_string())?;
            }
            wf.sync_all().map_err(|e| e.to_string())
        });
        r?;
        std::fs::remove_file(wpath).map_err(|e| e.to_string())?;
        Ok(t)
    };
    // The disk is noisy: the baseline runs before and after ours, the best counts.
    let t_base1 = baseline()?;
    warm(true)?;
    let wfile = Arc::new(FileBigFile::open(wpath, BS).map_err(|e| e.to_string())?);
    let mut fh = open_handle(wfile.clone(), wsize, false)?;
    let (r, t_ours) = timed(|| -> Result<(), String> {
        {
            let v = fh
                .view_mut::<u64>(0, wsize as usize / 8)
                .map_err(|e| e.to_string())?;
            for (b, chunk) in v.into_slice().chunks_mut(BS / 8).enumerate() {
                chunk.copy_from_slice(&datas[b % 4]);
            }
        }
        fh.writeout(Writeout::STORE | Writeout::MARKSTORED)
            .map_err(|e| e.to_string())?;
        wfile.sync().map_err(|e| e.to_string())
    });
    r?;
    drop(fh);
    drop(wfile);
    let t_base = t_base1.min(baseline()?);
    report.throughput(
        "virtmem fill + writeout + fsync",
        wsize,
        t_ours,
        "write() + fsync",
        t_base,
    );
    Ok(())
}

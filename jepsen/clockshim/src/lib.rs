//! The fault suite's clock nemesis, preloaded into `secretd`
//! (`LD_PRELOAD`): the wall clock (`CLOCK_REALTIME` and its coarse
//! variant, `gettimeofday`, `time`) runs ahead or behind by the whole
//! seconds written in the file named by `SECRETD_CLOCK_OFFSET_FILE`
//! (`+30`, `-120`), re-read at most every 100 ms. Monotonic clocks are
//! left alone, as libfaketime's `FAKETIME_DONT_FAKE_MONOTONIC` did.
//!
//! Why not libfaketime: secretd's allocator is jemalloc, and libfaketime's
//! initialisation (`dlsym`, which allocates) and jemalloc's (which reads
//! the clock) wait on each other forever (wolfcw/libfaketime#130). This
//! library never allocates, never calls `dlsym`, and asks the kernel for
//! the time directly (`syscall`), so there is nothing to initialise.

use std::sync::atomic::{AtomicI64, Ordering};

use libc::{c_int, c_long, c_void, clockid_t, time_t, timespec, timeval};

/// The offset in seconds, and when it was last read (monotonic ns; 0 =
/// never).
static OFFSET_S: AtomicI64 = AtomicI64::new(0);
static READ_AT_NS: AtomicI64 = AtomicI64::new(0);
const REREAD_NS: i64 = 100_000_000;
const ENV: &[u8] = b"SECRETD_CLOCK_OFFSET_FILE\0";
/// Longest offset text read (`-9223372036854775808\n` fits).
const TEXT_BYTES_MAX: usize = 32;

unsafe fn raw_clock_gettime(clk: clockid_t, tp: *mut timespec) -> c_int {
    libc::syscall(libc::SYS_clock_gettime, clk as c_long, tp) as c_int
}

fn monotonic_ns() -> i64 {
    let mut ts = timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { raw_clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// `+30`, `-5`, `7` (surrounding whitespace allowed); None if not that.
fn parse(text: &[u8]) -> Option<i64> {
    let t = text.trim_ascii();
    let (neg, digits) = match t.first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if neg { -v } else { v })
}

/// The current offset: the file's, re-read when the last read is stale. A
/// missing or unreadable file keeps the last value.
fn offset_s() -> i64 {
    let now = monotonic_ns();
    let at = READ_AT_NS.load(Ordering::Relaxed);
    if at != 0 && now - at < REREAD_NS {
        return OFFSET_S.load(Ordering::Relaxed);
    }
    READ_AT_NS.store(now.max(1), Ordering::Relaxed);
    // SAFETY: getenv with a NUL-terminated name; open/read/close on a
    // stack buffer of the given size. None of these allocate.
    unsafe {
        let path = libc::getenv(ENV.as_ptr().cast());
        if path.is_null() {
            return 0;
        }
        let fd = libc::open(path, libc::O_RDONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            let mut buf = [0u8; TEXT_BYTES_MAX];
            let n = libc::read(fd, buf.as_mut_ptr().cast::<c_void>(), buf.len());
            libc::close(fd);
            if n > 0 {
                if let Some(v) = parse(&buf[..n as usize]) {
                    OFFSET_S.store(v, Ordering::Relaxed);
                }
            }
        }
    }
    OFFSET_S.load(Ordering::Relaxed)
}

fn is_wall(clk: clockid_t) -> bool {
    clk == libc::CLOCK_REALTIME || clk == libc::CLOCK_REALTIME_COARSE
}

/// # Safety
/// As libc's `clock_gettime`.
#[no_mangle]
pub unsafe extern "C" fn clock_gettime(clk: clockid_t, tp: *mut timespec) -> c_int {
    let r = raw_clock_gettime(clk, tp);
    if r == 0 && is_wall(clk) && !tp.is_null() {
        (*tp).tv_sec += offset_s() as time_t;
    }
    r
}

/// # Safety
/// As libc's `gettimeofday`.
#[no_mangle]
pub unsafe extern "C" fn gettimeofday(tv: *mut timeval, _tz: *mut c_void) -> c_int {
    if tv.is_null() {
        return 0;
    }
    let mut ts = timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let r = clock_gettime(libc::CLOCK_REALTIME, &mut ts);
    if r == 0 {
        (*tv).tv_sec = ts.tv_sec;
        (*tv).tv_usec = ts.tv_nsec / 1000;
    }
    r
}

/// # Safety
/// As libc's `time`.
#[no_mangle]
pub unsafe extern "C" fn time(t: *mut time_t) -> time_t {
    let mut ts = timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    if clock_gettime(libc::CLOCK_REALTIME, &mut ts) != 0 {
        return -1;
    }
    if !t.is_null() {
        *t = ts.tv_sec;
    }
    ts.tv_sec
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn offsets_parse() {
        assert_eq!(parse(b"+30\n"), Some(30));
        assert_eq!(parse(b"-120"), Some(-120));
        assert_eq!(parse(b" 7 "), Some(7));
        assert_eq!(parse(b"+"), None);
        assert_eq!(parse(b"1x"), None);
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"99999999999999999999"), None);
    }
}

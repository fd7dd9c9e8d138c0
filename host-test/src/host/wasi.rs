//! WASI preview1 as Envoy provides it: the 15-function baseline of cpp-host, with Envoy's
//! behaviour rather than a real OS (stdout and stderr go to the log, no files, a capped
//! `random_get`, environment only from the VM's configured variables).

use wasmtime::{Linker, Result};

use super::abi::{errno, LogLevel, MAX_RANDOM_BYTES};
use super::imports::guard;
use super::memory::{read, write, write_u32, write_u64, Ctx};
use super::state::VmData;

/// The baseline set; anything else (e.g. `sched_yield`) fails to load on Envoy before the
/// late-2025 cpp-host updates, so the host refuses it.
pub const FUNCTIONS: [&str; 15] = [
    "fd_write",
    "fd_read",
    "fd_seek",
    "fd_close",
    "fd_fdstat_get",
    "environ_get",
    "environ_sizes_get",
    "args_get",
    "args_sizes_get",
    "clock_time_get",
    "random_get",
    "proc_exit",
    "path_open",
    "fd_prestat_get",
    "fd_prestat_dir_name",
];

/// cpp-host registers each function under both names.
pub const MODULES: [&str; 2] = ["wasi_snapshot_preview1", "wasi_unstable"];

fn log(c: &Ctx<'_>, level: LogLevel, message: String) {
    let worker = c.data().worker;
    c.data().world().log(worker, level, message);
}

/// stdout logs at Info and stderr at Error, one trailing newline removed.
fn fd_write(mut c: Ctx<'_>, fd: i32, iovs: i32, iovs_len: i32, ret_nwritten: i32) -> Result<i32> {
    guard(&c, "fd_write")?;
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Error,
        _ => return Ok(errno::BADF),
    };
    let mut text = Vec::new();
    for i in 0..iovs_len.max(0) {
        let Some(iov) = read(&c, iovs.wrapping_add(i * 8), 8) else {
            return Ok(errno::FAULT);
        };
        let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
        let Some(bytes) = read(&c, ptr, len) else {
            return Ok(errno::FAULT);
        };
        text.extend_from_slice(&bytes);
    }
    let written = text.len() as u32;
    if text.last() == Some(&b'\n') {
        text.pop();
    }
    log(&c, level, String::from_utf8_lossy(&text).into_owned());
    Ok(if write_u32(&mut c, ret_nwritten, written) {
        errno::SUCCESS
    } else {
        errno::FAULT
    })
}

fn fd_read(c: Ctx<'_>, _fd: i32, _iovs: i32, _len: i32, _ret: i32) -> Result<i32> {
    guard(&c, "fd_read")?;
    Ok(errno::NOSYS)
}

fn fd_seek(c: Ctx<'_>, fd: i32, _offset: i64, _whence: i32, _ret: i32) -> Result<i32> {
    guard(&c, "fd_seek")?;
    log(
        &c,
        LogLevel::Error,
        format!("wasi fd_seek({fd}) is not supported"),
    );
    Ok(errno::SUCCESS)
}

fn fd_close(c: Ctx<'_>, fd: i32) -> Result<i32> {
    guard(&c, "fd_close")?;
    log(
        &c,
        LogLevel::Error,
        format!("wasi fd_close({fd}) is not supported"),
    );
    Ok(errno::SUCCESS)
}

/// stdout/stderr are character devices with the write right only.
fn fd_fdstat_get(mut c: Ctx<'_>, fd: i32, ret_stat: i32) -> Result<i32> {
    guard(&c, "fd_fdstat_get")?;
    if fd != 1 && fd != 2 {
        return Ok(errno::BADF);
    }
    let mut stat = [0u8; 24];
    stat[0] = 2; // filetype: character device
    stat[8..16].copy_from_slice(&64u64.to_le_bytes()); // rights_base: FD_WRITE
    Ok(if write(&mut c, ret_stat, &stat) {
        errno::SUCCESS
    } else {
        errno::FAULT
    })
}

fn environ_entries(c: &Ctx<'_>) -> Vec<Vec<u8>> {
    c.data()
        .settings
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}\0").into_bytes())
        .collect()
}

fn environ_sizes_get(mut c: Ctx<'_>, ret_count: i32, ret_size: i32) -> Result<i32> {
    guard(&c, "environ_sizes_get")?;
    let entries = environ_entries(&c);
    let size: usize = entries.iter().map(Vec::len).sum();
    Ok(
        if write_u32(&mut c, ret_count, entries.len() as u32)
            && write_u32(&mut c, ret_size, size as u32)
        {
            errno::SUCCESS
        } else {
            errno::FAULT
        },
    )
}

fn environ_get(mut c: Ctx<'_>, ptrs: i32, buf: i32) -> Result<i32> {
    guard(&c, "environ_get")?;
    let mut at = buf;
    for (i, entry) in environ_entries(&c).iter().enumerate() {
        if !write_u32(&mut c, ptrs.wrapping_add(4 * i as i32), at as u32)
            || !write(&mut c, at, entry)
        {
            return Ok(errno::FAULT);
        }
        at = at.wrapping_add(entry.len() as i32);
    }
    Ok(errno::SUCCESS)
}

fn args_sizes_get(mut c: Ctx<'_>, ret_argc: i32, ret_size: i32) -> Result<i32> {
    guard(&c, "args_sizes_get")?;
    Ok(
        if write_u32(&mut c, ret_argc, 0) && write_u32(&mut c, ret_size, 0) {
            errno::SUCCESS
        } else {
            errno::FAULT
        },
    )
}

fn args_get(c: Ctx<'_>, _argv: i32, _buf: i32) -> Result<i32> {
    guard(&c, "args_get")?;
    Ok(errno::SUCCESS)
}

/// Realtime (0) and monotonic (1) read the virtual clock; Envoy supports no other clock.
fn clock_time_get(mut c: Ctx<'_>, id: i32, _precision: i64, ret: i32) -> Result<i32> {
    guard(&c, "clock_time_get")?;
    let now = {
        let w = c.data().world();
        match id {
            0 => w.realtime_ns(),
            1 => w.monotonic_ns,
            _ => return Ok(errno::NOTSUP),
        }
    };
    Ok(if write_u64(&mut c, ret, now) {
        errno::SUCCESS
    } else {
        errno::FAULT
    })
}

/// Deterministic bytes (splitmix64 seeded per worker), so runs and replays reproduce.
fn random_get(mut c: Ctx<'_>, buf: i32, len: i32) -> Result<i32> {
    guard(&c, "random_get")?;
    let len = len as u32;
    if len > MAX_RANDOM_BYTES {
        return Ok(errno::INVAL);
    }
    let mut bytes = Vec::with_capacity(len as usize + 8);
    while bytes.len() < len as usize {
        let s = &mut c.data_mut().random_state;
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        bytes.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    bytes.truncate(len as usize);
    Ok(if write(&mut c, buf, &bytes) {
        errno::SUCCESS
    } else {
        errno::FAULT
    })
}

/// Envoy logs and returns; it never exits the process for a plugin.
fn proc_exit(c: Ctx<'_>, code: i32) -> Result<()> {
    guard(&c, "proc_exit")?;
    log(
        &c,
        LogLevel::Error,
        format!("wasi proc_exit({code}) ignored"),
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn path_open(
    c: Ctx<'_>,
    _fd: i32,
    _dirflags: i32,
    _path: i32,
    _path_len: i32,
    _oflags: i32,
    _rights_base: i64,
    _rights_inheriting: i64,
    _fdflags: i32,
    _ret_fd: i32,
) -> Result<i32> {
    guard(&c, "path_open")?;
    Ok(errno::NOENT)
}

fn fd_prestat_get(c: Ctx<'_>, _fd: i32, _ret: i32) -> Result<i32> {
    guard(&c, "fd_prestat_get")?;
    Ok(errno::BADF)
}

fn fd_prestat_dir_name(c: Ctx<'_>, _fd: i32, _path: i32, _len: i32) -> Result<i32> {
    guard(&c, "fd_prestat_dir_name")?;
    Ok(errno::NOSYS)
}

/// Defines the baseline under both WASI module names.
pub fn add_to_linker(l: &mut Linker<VmData>) -> Result<()> {
    for m in MODULES {
        l.func_wrap(m, "fd_write", fd_write)?;
        l.func_wrap(m, "fd_read", fd_read)?;
        l.func_wrap(m, "fd_seek", fd_seek)?;
        l.func_wrap(m, "fd_close", fd_close)?;
        l.func_wrap(m, "fd_fdstat_get", fd_fdstat_get)?;
        l.func_wrap(m, "environ_get", environ_get)?;
        l.func_wrap(m, "environ_sizes_get", environ_sizes_get)?;
        l.func_wrap(m, "args_get", args_get)?;
        l.func_wrap(m, "args_sizes_get", args_sizes_get)?;
        l.func_wrap(m, "clock_time_get", clock_time_get)?;
        l.func_wrap(m, "random_get", random_get)?;
        l.func_wrap(m, "proc_exit", proc_exit)?;
        l.func_wrap(m, "path_open", path_open)?;
        l.func_wrap(m, "fd_prestat_get", fd_prestat_get)?;
        l.func_wrap(m, "fd_prestat_dir_name", fd_prestat_dir_name)?;
    }
    Ok(())
}

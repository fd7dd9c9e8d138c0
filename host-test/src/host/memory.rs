//! Guest memory access for hostcalls: bounded reads and writes, and return buffers allocated
//! through the guest's own allocator at exact size (the SDK takes them over as `Vec`s).

use wasmtime::{Caller, Result};

use super::abi::Status;
use super::state::{Restriction, VmData};

pub type Ctx<'a> = Caller<'a, VmData>;

/// Copies `len` bytes at `ptr` out of guest memory; `None` when out of bounds.
pub fn read(c: &Ctx<'_>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    let mem = c.data().memory?;
    let start = ptr as u32 as usize;
    let end = start.checked_add(len as u32 as usize)?;
    mem.data(c).get(start..end).map(<[u8]>::to_vec)
}

/// Writes `bytes` at `ptr`; false when out of bounds.
pub fn write(c: &mut Ctx<'_>, ptr: i32, bytes: &[u8]) -> bool {
    let Some(mem) = c.data().memory else {
        return false;
    };
    let start = ptr as u32 as usize;
    let Some(end) = start.checked_add(bytes.len()) else {
        return false;
    };
    match mem.data_mut(c).get_mut(start..end) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

pub fn write_u32(c: &mut Ctx<'_>, ptr: i32, v: u32) -> bool {
    write(c, ptr, &v.to_le_bytes())
}

pub fn write_u64(c: &mut Ctx<'_>, ptr: i32, v: u64) -> bool {
    write(c, ptr, &v.to_le_bytes())
}

/// A status word for a write that may have failed.
pub fn status_of(ok: bool) -> i32 {
    if ok {
        Status::Ok.code()
    } else {
        Status::InvalidMemoryAccess.code()
    }
}

/// Hands `data` to the guest: allocates exactly `data.len()` bytes through its allocator,
/// copies, and writes the pointer and length. Empty data is `ptr = 0, len = 0` with no
/// allocation. A guest allocator that fails is a trap, as in Envoy.
pub fn return_buffer(c: &mut Ctx<'_>, data: &[u8], ptr_ptr: i32, len_ptr: i32) -> Result<i32> {
    if data.is_empty() {
        return Ok(status_of(
            write_u32(c, ptr_ptr, 0) && write_u32(c, len_ptr, 0),
        ));
    }
    let Some(alloc) = c.data().allocator.clone() else {
        wasmtime::bail!("the module exports neither malloc nor proxy_on_memory_allocate");
    };
    let len = i32::try_from(data.len())
        .map_err(|_| wasmtime::format_err!("return buffer of {} bytes", data.len()))?;
    let before = c.data().restriction;
    c.data_mut().restriction = Restriction::Allocate;
    let ptr = alloc.call(&mut *c, len);
    c.data_mut().restriction = before;
    let ptr = ptr?;
    if ptr == 0 {
        wasmtime::bail!("the guest allocator returned 0 for {} bytes", data.len());
    }
    if !write(c, ptr, data) {
        wasmtime::bail!("the guest allocator returned {ptr:#x}, outside memory");
    }
    Ok(status_of(
        write_u32(c, ptr_ptr, ptr as u32) && write_u32(c, len_ptr, len as u32),
    ))
}

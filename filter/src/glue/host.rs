//! Raw host calls the glue makes itself, for two reasons the SDK wrappers cannot serve:
//! header maps are read as the host's serialized buffer and parsed in place (no per-header
//! `String`s), and an unexpected status is an `Option::None`, never a panic that kills the VM.
//! Calls that register callbacks (`dispatch_http_call`) stay with the SDK, which tracks tokens.

use core::ptr::null_mut;

extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: u32,
        ret_data: *mut *mut u8,
        ret_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        ret_data: *mut *mut u8,
        ret_size: *mut usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        ret_data: *mut *mut u8,
        ret_size: *mut usize,
    ) -> u32;
    fn proxy_get_current_time_nanoseconds(ret_time: *mut u64) -> u32;
}

const OK: u32 = 0;
/// `MapType::HttpRequestHeaders`.
pub const REQUEST_HEADERS: u32 = 0;
/// `MapType::HttpResponseHeaders`.
pub const RESPONSE_HEADERS: u32 = 2;
/// `MapType::HttpResponseTrailers`.
pub const RESPONSE_TRAILERS: u32 = 3;

/// Takes ownership of a buffer the host allocated through `proxy_on_memory_allocate`
/// (the SDK's allocator hands out `Vec<u8>` storage of exactly `size` bytes).
///
/// # Safety
/// `ptr` and `size` must describe such a buffer, returned by the host and owned by no one
/// else; a null `ptr` or a zero `size` gives `None`.
unsafe fn take(ptr: *mut u8, size: usize) -> Option<Vec<u8>> {
    if ptr.is_null() || size == 0 {
        return None;
    }
    Some(Vec::from_raw_parts(ptr, size, size))
}

/// The whole header map, serialized; parse it with [`crate::headers::pairs`].
pub fn header_map(map_type: u32) -> Option<Vec<u8>> {
    let mut ptr = null_mut();
    let mut size = 0;
    // SAFETY: the host writes a pointer it allocated through our allocator and its size.
    unsafe {
        if proxy_get_header_map_pairs(map_type, &mut ptr, &mut size) != OK {
            return None;
        }
        take(ptr, size)
    }
}

/// One header's value (the first, as Envoy returns it); `None` when absent or empty.
pub fn header_value(map_type: u32, name: &str) -> Option<Vec<u8>> {
    let mut ptr = null_mut();
    let mut size = 0;
    // SAFETY: as for `header_map`; the name is a live slice for the duration of the call.
    unsafe {
        if proxy_get_header_map_value(map_type, name.as_ptr(), name.len(), &mut ptr, &mut size)
            != OK
        {
            return None;
        }
        take(ptr, size)
    }
}

/// Sets (replacing) a header; false if the host refused.
pub fn replace_header(map_type: u32, name: &str, value: &[u8]) -> bool {
    // SAFETY: pointers and lengths describe live slices for the duration of the call.
    unsafe {
        proxy_replace_header_map_value(
            map_type,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        ) == OK
    }
}

/// Removes a header; false if the host refused.
pub fn remove_header(map_type: u32, name: &str) -> bool {
    // SAFETY: as above.
    unsafe { proxy_remove_header_map_value(map_type, name.as_ptr(), name.len()) == OK }
}

/// Adds a header value after any the map already has (a list header such as `server-timing`
/// keeps the upstream's entries); false if the host refused.
pub fn add_header(map_type: u32, name: &str, value: &[u8]) -> bool {
    // SAFETY: pointers and lengths describe live slices for the duration of the call.
    unsafe {
        proxy_add_header_map_value(
            map_type,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        ) == OK
    }
}

/// Sets a property of the stream; in Envoy, the filter-state entry `wasm.<name>` for a
/// one-segment `name`, which access logs print with `%FILTER_STATE(wasm.<name>:PLAIN)%`.
/// False if the host refused: NotFound outside a stream, BadArgument for a read-only property
/// already set. The SDK's `set_property` panics on either, which would kill the VM.
pub fn set_property(name: &str, value: &[u8]) -> bool {
    // SAFETY: pointers and lengths describe live slices for the duration of the call.
    unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) == OK }
}

/// A property by its `\0`-joined path (e.g. `b"response\0code"`); `None` when absent or empty.
pub fn property(path: &[u8]) -> Option<Vec<u8>> {
    let mut ptr = null_mut();
    let mut size = 0;
    // SAFETY: as for `header_map`.
    unsafe {
        if proxy_get_property(path.as_ptr(), path.len(), &mut ptr, &mut size) != OK {
            return None;
        }
        take(ptr, size)
    }
}

/// An integer property (Envoy encodes int and uint as 8 little-endian bytes).
pub fn property_i64(path: &[u8]) -> Option<i64> {
    let v = property(path)?;
    let bytes: [u8; 8] = v.get(..8)?.try_into().ok()?;
    Some(i64::from_le_bytes(bytes))
}

/// Host wall-clock time in nanoseconds since the epoch.
pub fn now_ns() -> u64 {
    let mut t = 0u64;
    // SAFETY: the host writes one u64.
    unsafe {
        if proxy_get_current_time_nanoseconds(&mut t) != OK {
            return 0;
        }
    }
    t
}

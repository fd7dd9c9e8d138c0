//! The `env` hostcalls of proxy-wasm ABI 0.2.1 with Envoy's semantics and status codes.
//!
//! Each function reads its arguments out of guest memory, asks the VM state what exists in
//! the current phase, and answers with the status Envoy would. Guest bugs that Envoy turns
//! into traps (a failing allocator, a restricted call) are traps here too.

use wasmtime::{Linker, Result};

use super::abi::{metric, LogLevel, Status};
use super::headers::HeaderMap;
use super::imports::guard;
use super::memory::{read, return_buffer, status_of, write_u32, write_u64, Ctx};
use super::pairs;
use super::state::{LocalResponse, Tick, VmData};
use super::world::{GrpcCall, HttpCall, MetricValue, Queue};

const OK: i32 = Status::Ok as i32;

fn st(s: Status) -> i32 {
    s.code()
}

/// Reads guest bytes, or answers InvalidMemoryAccess from the calling hostcall.
macro_rules! bytes {
    ($c:expr, $ptr:expr, $len:expr) => {
        match read(&$c, $ptr, $len) {
            Some(b) => b,
            None => return Ok(st(Status::InvalidMemoryAccess)),
        }
    };
}

fn proxy_log(c: Ctx<'_>, level: i32, ptr: i32, len: i32) -> Result<i32> {
    guard(&c, "proxy_log")?;
    let Some(level) = LogLevel::from_raw(level) else {
        return Ok(st(Status::BadArgument));
    };
    let msg = bytes!(c, ptr, len);
    let worker = c.data().worker;
    c.data()
        .world()
        .log(worker, level, String::from_utf8_lossy(&msg).into_owned());
    Ok(OK)
}

fn proxy_get_log_level(mut c: Ctx<'_>, ret: i32) -> Result<i32> {
    guard(&c, "proxy_get_log_level")?;
    let level = c.data().settings.log_level as u32;
    Ok(status_of(write_u32(&mut c, ret, level)))
}

fn proxy_get_current_time_nanoseconds(mut c: Ctx<'_>, ret: i32) -> Result<i32> {
    guard(&c, "proxy_get_current_time_nanoseconds")?;
    let now = c.data().world().realtime_ns();
    Ok(status_of(write_u64(&mut c, ret, now)))
}

/// A stream context sets its root's timer, like Envoy; a new period re-arms from now.
fn proxy_set_tick_period_milliseconds(mut c: Ctx<'_>, period: i32) -> Result<i32> {
    guard(&c, "proxy_set_tick_period_milliseconds")?;
    let now = c.data().world().monotonic_ns;
    let d = c.data_mut();
    let root = d.active_root();
    let period_ms = period as u32;
    if period_ms == 0 {
        d.ticks.remove(&root);
    } else {
        d.ticks.insert(
            root,
            Tick {
                period_ms,
                next_ns: now + u64::from(period_ms) * 1_000_000,
            },
        );
    }
    Ok(OK)
}

fn proxy_get_buffer_bytes(
    mut c: Ctx<'_>,
    buffer_type: i32,
    start: i32,
    max_size: i32,
    ret_ptr: i32,
    ret_len: i32,
) -> Result<i32> {
    guard(&c, "proxy_get_buffer_bytes")?;
    let data = match c.data().buffer(buffer_type) {
        Ok(b) => {
            // The SDK asks for (0, u32::MAX): clamp without overflowing.
            let start = (start as u32 as usize).min(b.len());
            let end = start.saturating_add(max_size as u32 as usize).min(b.len());
            b[start..end].to_vec()
        }
        Err(s) => return Ok(st(s)),
    };
    return_buffer(&mut c, &data, ret_ptr, ret_len)
}

/// Envoy's rules: start 0 replaces the first `size` bytes (prepends when 0), start at or past
/// the end appends, anything in the middle is refused.
fn proxy_set_buffer_bytes(
    mut c: Ctx<'_>,
    buffer_type: i32,
    start: i32,
    size: i32,
    ptr: i32,
    len: i32,
) -> Result<i32> {
    guard(&c, "proxy_set_buffer_bytes")?;
    let data = bytes!(c, ptr, len);
    let buf = match c.data_mut().buffer_mut(buffer_type) {
        Ok(b) => b,
        Err(s) => return Ok(st(s)),
    };
    let (start, size) = (start as u32 as usize, size as u32 as usize);
    if start == 0 {
        buf.drain(..size.min(buf.len()));
        buf.splice(0..0, data);
    } else if start >= buf.len() {
        buf.extend_from_slice(&data);
    } else {
        return Ok(st(Status::BadArgument));
    }
    Ok(OK)
}

fn proxy_get_buffer_status(
    mut c: Ctx<'_>,
    buffer_type: i32,
    ret_len: i32,
    ret_flags: i32,
) -> Result<i32> {
    guard(&c, "proxy_get_buffer_status")?;
    let len = match c.data().buffer(buffer_type) {
        Ok(b) => b.len() as u32,
        Err(s) => return Ok(st(s)),
    };
    Ok(status_of(
        write_u32(&mut c, ret_len, len) && write_u32(&mut c, ret_flags, 0),
    ))
}

/// An unavailable map reads as empty (Envoy returns Ok with no pairs).
fn proxy_get_header_map_pairs(
    mut c: Ctx<'_>,
    map_type: i32,
    ret_ptr: i32,
    ret_len: i32,
) -> Result<i32> {
    guard(&c, "proxy_get_header_map_pairs")?;
    let data = c
        .data()
        .map(map_type)
        .map(HeaderMap::to_pairs_bytes)
        .unwrap_or_default();
    return_buffer(&mut c, &data, ret_ptr, ret_len)
}

fn proxy_set_header_map_pairs(mut c: Ctx<'_>, map_type: i32, ptr: i32, len: i32) -> Result<i32> {
    guard(&c, "proxy_set_header_map_pairs")?;
    let raw = bytes!(c, ptr, len);
    let Ok(entries) = pairs::decode(&raw) else {
        return Ok(st(Status::BadArgument));
    };
    match c.data_mut().map_mut(map_type) {
        Ok(m) => {
            *m = HeaderMap::from_pairs(&entries);
            Ok(OK)
        }
        Err(s) => Ok(st(s)),
    }
}

fn proxy_get_header_map_size(mut c: Ctx<'_>, map_type: i32, ret: i32) -> Result<i32> {
    guard(&c, "proxy_get_header_map_size")?;
    match c.data().map(map_type) {
        Ok(m) => {
            let size = m.byte_size() as u32;
            Ok(status_of(write_u32(&mut c, ret, size)))
        }
        Err(_) => Ok(st(Status::BadArgument)),
    }
}

fn proxy_get_header_map_value(
    mut c: Ctx<'_>,
    map_type: i32,
    key_ptr: i32,
    key_len: i32,
    ret_ptr: i32,
    ret_len: i32,
) -> Result<i32> {
    guard(&c, "proxy_get_header_map_value")?;
    let key = bytes!(c, key_ptr, key_len);
    if c.data().settings.record_property_reads {
        // Single header reads cost a host call like a property: logged in the same list as
        // `map[name]`, e.g. `response_trailers[grpc-status]`.
        let map = match map_type {
            super::abi::map::REQUEST_HEADERS => "request_headers",
            super::abi::map::REQUEST_TRAILERS => "request_trailers",
            super::abi::map::RESPONSE_HEADERS => "response_headers",
            super::abi::map::RESPONSE_TRAILERS => "response_trailers",
            _ => "other_map",
        };
        let read = format!("{map}[{}]", String::from_utf8_lossy(&key));
        c.data().world().property_reads.push(read);
    }
    let value = match c.data().map(map_type) {
        Ok(m) => match m.get_bytes(&key) {
            Some(v) => v.to_vec(),
            None => return Ok(st(Status::NotFound)),
        },
        Err(s) => return Ok(st(s)),
    };
    return_buffer(&mut c, &value, ret_ptr, ret_len)
}

/// Shared shape of add/replace: read key and value, apply to the writable map.
fn edit_map(
    mut c: Ctx<'_>,
    name: &str,
    map_type: i32,
    key: (i32, i32),
    value: (i32, i32),
    apply: fn(&mut HeaderMap, &[u8], &[u8]),
) -> Result<i32> {
    guard(&c, name)?;
    let k = bytes!(c, key.0, key.1);
    let v = bytes!(c, value.0, value.1);
    match c.data_mut().map_mut(map_type) {
        Ok(m) => {
            apply(m, &k, &v);
            Ok(OK)
        }
        Err(s) => Ok(st(s)),
    }
}

fn proxy_add_header_map_value(
    c: Ctx<'_>,
    t: i32,
    kp: i32,
    kl: i32,
    vp: i32,
    vl: i32,
) -> Result<i32> {
    edit_map(
        c,
        "proxy_add_header_map_value",
        t,
        (kp, kl),
        (vp, vl),
        HeaderMap::add,
    )
}

fn proxy_replace_header_map_value(
    c: Ctx<'_>,
    t: i32,
    kp: i32,
    kl: i32,
    vp: i32,
    vl: i32,
) -> Result<i32> {
    edit_map(
        c,
        "proxy_replace_header_map_value",
        t,
        (kp, kl),
        (vp, vl),
        HeaderMap::replace,
    )
}

fn proxy_remove_header_map_value(mut c: Ctx<'_>, t: i32, kp: i32, kl: i32) -> Result<i32> {
    guard(&c, "proxy_remove_header_map_value")?;
    let k = bytes!(c, kp, kl);
    match c.data_mut().map_mut(t) {
        Ok(m) => {
            m.remove(&k);
            Ok(OK)
        }
        Err(s) => Ok(st(s)),
    }
}

fn proxy_get_property(
    mut c: Ctx<'_>,
    path_ptr: i32,
    path_len: i32,
    ret_ptr: i32,
    ret_len: i32,
) -> Result<i32> {
    guard(&c, "proxy_get_property")?;
    let path = bytes!(c, path_ptr, path_len);
    if c.data().settings.record_property_reads {
        let dotted = String::from_utf8_lossy(&path).replace('\0', ".");
        c.data().world().property_reads.push(dotted);
    }
    match c.data().property(&path) {
        Ok(v) => return_buffer(&mut c, &v, ret_ptr, ret_len),
        Err(s) => Ok(st(s)),
    }
}

fn proxy_set_property(
    mut c: Ctx<'_>,
    path_ptr: i32,
    path_len: i32,
    vp: i32,
    vl: i32,
) -> Result<i32> {
    guard(&c, "proxy_set_property")?;
    let path = bytes!(c, path_ptr, path_len);
    let value = bytes!(c, vp, vl);
    match c.data_mut().set_property(path, value) {
        Ok(()) => Ok(OK),
        Err(s) => Ok(st(s)),
    }
}

/// Stream types 0..=3; recorded on the stream and applied after the callback returns.
fn stream_op(mut c: Ctx<'_>, name: &str, stream_type: i32, close: bool) -> Result<i32> {
    guard(&c, name)?;
    if !(0..=3).contains(&stream_type) {
        return Ok(st(Status::BadArgument));
    }
    let d = c.data_mut();
    let active = d.active;
    match d.stream.as_mut().filter(|s| s.contexts.contains(&active)) {
        Some(s) => {
            if close {
                s.closed.push(stream_type);
            } else {
                s.continued.push(stream_type);
            }
            Ok(OK)
        }
        None => Ok(st(Status::BadArgument)),
    }
}

fn proxy_continue_stream(c: Ctx<'_>, stream_type: i32) -> Result<i32> {
    stream_op(c, "proxy_continue_stream", stream_type, false)
}

fn proxy_close_stream(c: Ctx<'_>, stream_type: i32) -> Result<i32> {
    stream_op(c, "proxy_close_stream", stream_type, true)
}

#[allow(clippy::too_many_arguments)]
fn proxy_send_local_response(
    mut c: Ctx<'_>,
    status: i32,
    details_ptr: i32,
    details_len: i32,
    body_ptr: i32,
    body_len: i32,
    headers_ptr: i32,
    headers_len: i32,
    grpc_status: i32,
) -> Result<i32> {
    guard(&c, "proxy_send_local_response")?;
    let details = bytes!(c, details_ptr, details_len);
    let body = bytes!(c, body_ptr, body_len);
    let raw = bytes!(c, headers_ptr, headers_len);
    let Ok(headers) = pairs::decode(&raw) else {
        return Ok(st(Status::BadArgument));
    };
    let d = c.data_mut();
    let active = d.active;
    match d.stream.as_mut().filter(|s| s.contexts.contains(&active)) {
        Some(s) => {
            s.local_response = Some(LocalResponse {
                status: status as u32,
                details: String::from_utf8_lossy(&details).into_owned(),
                body,
                headers: HeaderMap::from_pairs(&headers),
                grpc_status,
            });
            Ok(OK)
        }
        None => Ok(st(Status::BadArgument)),
    }
}

fn cluster_known(c: &Ctx<'_>, cluster: &str) -> bool {
    c.data()
        .settings
        .clusters
        .as_ref()
        .is_none_or(|set| set.contains(cluster))
}

/// Recorded for the test to answer; attributed to the active context's root, as in Envoy.
/// An unknown cluster, a negative timeout or a missing `:method`/`:path`/`:authority` is
/// BadArgument; a timeout of 0 never expires.
#[allow(clippy::too_many_arguments)]
fn proxy_http_call(
    mut c: Ctx<'_>,
    up_ptr: i32,
    up_len: i32,
    hdr_ptr: i32,
    hdr_len: i32,
    body_ptr: i32,
    body_len: i32,
    trl_ptr: i32,
    trl_len: i32,
    timeout_ms: i32,
    ret_token: i32,
) -> Result<i32> {
    guard(&c, "proxy_http_call")?;
    let cluster = String::from_utf8_lossy(&bytes!(c, up_ptr, up_len)).into_owned();
    let (Ok(headers), Ok(trailers)) = (
        pairs::decode(&bytes!(c, hdr_ptr, hdr_len)),
        pairs::decode(&bytes!(c, trl_ptr, trl_len)),
    ) else {
        return Ok(st(Status::BadArgument));
    };
    let body = bytes!(c, body_ptr, body_len);
    let headers = HeaderMap::from_pairs(&headers);
    let required = [":method", ":path", ":authority"];
    if timeout_ms < 0
        || !cluster_known(&c, &cluster)
        || required.iter().any(|h| headers.get_bytes(h).is_none())
    {
        return Ok(st(Status::BadArgument));
    }
    let (worker, root_context) = (c.data().worker, c.data().active_root());
    let token = {
        let mut w = c.data().world();
        let token = w.token();
        let call = HttpCall {
            token,
            worker,
            root_context,
            cluster,
            headers,
            body,
            trailers: HeaderMap::from_pairs(&trailers),
            timeout_ms: timeout_ms as u32,
            sent_at_ns: w.monotonic_ns,
        };
        w.http_call_log.push(call.clone());
        w.http_calls.insert(token, call);
        token
    };
    Ok(status_of(write_u32(&mut c, ret_token, token)))
}

/// Reads the common gRPC call arguments: upstream, service, method, initial metadata.
fn grpc_target(
    c: &Ctx<'_>,
    up: (i32, i32),
    service: (i32, i32),
    method: (i32, i32),
    md: (i32, i32),
) -> Result<(Vec<u8>, String, String, HeaderMap), Status> {
    let get = |p: (i32, i32)| read(c, p.0, p.1).ok_or(Status::InvalidMemoryAccess);
    let upstream = get(up)?;
    let service = String::from_utf8_lossy(&get(service)?).into_owned();
    let method = String::from_utf8_lossy(&get(method)?).into_owned();
    let md = pairs::decode(&get(md)?).map_err(|_| Status::BadArgument)?;
    // Envoy reads an unknown name as a serialized GrpcService, which fails to parse.
    if !cluster_known(c, &String::from_utf8_lossy(&upstream)) {
        return Err(Status::ParseFailure);
    }
    Ok((upstream, service, method, HeaderMap::from_pairs(&md)))
}

fn record_grpc(
    c: &mut Ctx<'_>,
    target: (Vec<u8>, String, String, HeaderMap),
    message: Vec<u8>,
    timeout_ms: u32,
) -> u32 {
    let (worker, root_context) = (c.data().worker, c.data().active_root());
    let mut w = c.data().world();
    let token = w.token();
    let (upstream, service, method, initial_metadata) = target;
    w.grpc_calls.insert(
        token,
        GrpcCall {
            token,
            worker,
            root_context,
            upstream,
            service,
            method,
            initial_metadata,
            message,
            timeout_ms,
        },
    );
    token
}

#[allow(clippy::too_many_arguments)]
fn proxy_grpc_call(
    c: Ctx<'_>,
    up_ptr: i32,
    up_len: i32,
    svc_ptr: i32,
    svc_len: i32,
    m_ptr: i32,
    m_len: i32,
    md_ptr: i32,
    md_len: i32,
    msg_ptr: i32,
    msg_len: i32,
    timeout_ms: i32,
    ret_token: i32,
) -> Result<i32> {
    guard(&c, "proxy_grpc_call")?;
    let names = [
        (up_ptr, up_len),
        (svc_ptr, svc_len),
        (m_ptr, m_len),
        (md_ptr, md_len),
    ];
    open_grpc(
        c,
        names,
        Some((msg_ptr, msg_len)),
        timeout_ms as u32,
        ret_token,
    )
}

#[allow(clippy::too_many_arguments)]
fn proxy_grpc_stream(
    c: Ctx<'_>,
    up_ptr: i32,
    up_len: i32,
    svc_ptr: i32,
    svc_len: i32,
    m_ptr: i32,
    m_len: i32,
    md_ptr: i32,
    md_len: i32,
    ret_token: i32,
) -> Result<i32> {
    guard(&c, "proxy_grpc_stream")?;
    let names = [
        (up_ptr, up_len),
        (svc_ptr, svc_len),
        (m_ptr, m_len),
        (md_ptr, md_len),
    ];
    open_grpc(c, names, None, 0, ret_token)
}

/// What a unary call and a stream share: resolve the target (upstream, service, method,
/// metadata), read the message (a stream has none), record the call and hand back its token.
fn open_grpc(
    mut c: Ctx<'_>,
    [up, svc, method, md]: [(i32, i32); 4],
    message: Option<(i32, i32)>,
    timeout_ms: u32,
    ret_token: i32,
) -> Result<i32> {
    let target = match grpc_target(&c, up, svc, method, md) {
        Ok(t) => t,
        Err(s) => return Ok(st(s)),
    };
    let message = match message {
        Some((ptr, len)) => bytes!(c, ptr, len),
        None => Vec::new(),
    };
    let token = record_grpc(&mut c, target, message, timeout_ms);
    Ok(status_of(write_u32(&mut c, ret_token, token)))
}

fn proxy_grpc_send(c: Ctx<'_>, token: i32, msg_ptr: i32, msg_len: i32, _end: i32) -> Result<i32> {
    guard(&c, "proxy_grpc_send")?;
    let msg = bytes!(c, msg_ptr, msg_len);
    let mut w = c.data().world();
    match w.grpc_calls.get_mut(&(token as u32)) {
        Some(call) => {
            call.message.extend_from_slice(&msg);
            Ok(OK)
        }
        None => Ok(st(Status::NotFound)),
    }
}

fn grpc_end(c: Ctx<'_>, name: &str, token: i32) -> Result<i32> {
    guard(&c, name)?;
    let removed = c.data().world().grpc_calls.remove(&(token as u32));
    Ok(if removed.is_some() {
        OK
    } else {
        st(Status::NotFound)
    })
}

fn proxy_grpc_cancel(c: Ctx<'_>, token: i32) -> Result<i32> {
    grpc_end(c, "proxy_grpc_cancel", token)
}

fn proxy_grpc_close(c: Ctx<'_>, token: i32) -> Result<i32> {
    grpc_end(c, "proxy_grpc_close", token)
}

fn proxy_get_status(mut c: Ctx<'_>, ret_code: i32, ret_ptr: i32, ret_len: i32) -> Result<i32> {
    guard(&c, "proxy_get_status")?;
    let (code, msg) = c.data().status.clone();
    if !write_u32(&mut c, ret_code, code) {
        return Ok(st(Status::InvalidMemoryAccess));
    }
    return_buffer(&mut c, &msg, ret_ptr, ret_len)
}

/// Shared data is keyed by the caller's vm_id; `cas` 0 writes unconditionally.
fn proxy_set_shared_data(c: Ctx<'_>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32) -> Result<i32> {
    guard(&c, "proxy_set_shared_data")?;
    let key = (c.data().settings.vm_id.clone(), bytes!(c, kp, kl));
    let value = bytes!(c, vp, vl);
    let mut w = c.data().world();
    if let Some((_, current)) = w.shared_data.get(&key) {
        if cas != 0 && cas as u32 != *current {
            return Ok(st(Status::CasMismatch));
        }
    }
    let next = w.next_cas;
    w.next_cas = w.next_cas.wrapping_add(1).max(1);
    w.shared_data.insert(key, (value, next));
    Ok(OK)
}

fn proxy_get_shared_data(
    mut c: Ctx<'_>,
    kp: i32,
    kl: i32,
    ret_ptr: i32,
    ret_len: i32,
    ret_cas: i32,
) -> Result<i32> {
    guard(&c, "proxy_get_shared_data")?;
    let key = (c.data().settings.vm_id.clone(), bytes!(c, kp, kl));
    let Some((value, cas)) = c.data().world().shared_data.get(&key).cloned() else {
        return Ok(st(Status::NotFound));
    };
    if !write_u32(&mut c, ret_cas, cas) {
        return Ok(st(Status::InvalidMemoryAccess));
    }
    return_buffer(&mut c, &value, ret_ptr, ret_len)
}

/// Registering again returns the same queue; the first registrant's root gets the callbacks.
fn proxy_register_shared_queue(mut c: Ctx<'_>, np: i32, nl: i32, ret_id: i32) -> Result<i32> {
    guard(&c, "proxy_register_shared_queue")?;
    let name = String::from_utf8_lossy(&bytes!(c, np, nl)).into_owned();
    let (vm_id, worker, root) = {
        let d = c.data();
        (d.settings.vm_id.clone(), d.worker, d.active_root())
    };
    let id = {
        let mut w = c.data().world();
        match w
            .queues
            .iter()
            .position(|q| q.vm_id == vm_id && q.name == name)
        {
            Some(i) => i + 1,
            None => {
                w.queues.push(Queue {
                    vm_id,
                    name,
                    owner_worker: worker,
                    owner_root: root,
                    items: Default::default(),
                });
                w.queues.len()
            }
        }
    };
    Ok(status_of(write_u32(&mut c, ret_id, id as u32)))
}

fn proxy_resolve_shared_queue(
    mut c: Ctx<'_>,
    vp: i32,
    vl: i32,
    np: i32,
    nl: i32,
    ret_id: i32,
) -> Result<i32> {
    guard(&c, "proxy_resolve_shared_queue")?;
    let mut vm_id = String::from_utf8_lossy(&bytes!(c, vp, vl)).into_owned();
    if vm_id.is_empty() {
        vm_id = c.data().settings.vm_id.clone();
    }
    let name = String::from_utf8_lossy(&bytes!(c, np, nl)).into_owned();
    let found = c
        .data()
        .world()
        .queues
        .iter()
        .position(|q| q.vm_id == vm_id && q.name == name);
    match found {
        Some(i) => Ok(status_of(write_u32(&mut c, ret_id, i as u32 + 1))),
        None => Ok(st(Status::NotFound)),
    }
}

/// Each enqueue posts one `proxy_on_queue_ready` to the owner, delivered after this call.
fn proxy_enqueue_shared_queue(c: Ctx<'_>, id: i32, vp: i32, vl: i32) -> Result<i32> {
    guard(&c, "proxy_enqueue_shared_queue")?;
    let value = bytes!(c, vp, vl);
    let mut w = c.data().world();
    let Some(q) = (id as u32)
        .checked_sub(1)
        .and_then(|i| w.queues.get_mut(i as usize))
    else {
        return Ok(st(Status::NotFound));
    };
    q.items.push_back(value);
    let note = (q.owner_worker, q.owner_root, id as u32);
    w.queue_ready.push_back(note);
    Ok(OK)
}

/// Only VMs with the queue's vm_id may dequeue.
fn proxy_dequeue_shared_queue(mut c: Ctx<'_>, id: i32, ret_ptr: i32, ret_len: i32) -> Result<i32> {
    guard(&c, "proxy_dequeue_shared_queue")?;
    let vm_id = c.data().settings.vm_id.clone();
    let item = {
        let mut w = c.data().world();
        match (id as u32)
            .checked_sub(1)
            .and_then(|i| w.queues.get_mut(i as usize))
        {
            Some(q) if q.vm_id == vm_id => q.items.pop_front(),
            _ => return Ok(st(Status::NotFound)),
        }
    };
    match item {
        Some(v) => return_buffer(&mut c, &v, ret_ptr, ret_len),
        None => Ok(st(Status::Empty)),
    }
}

/// Ids carry the type in their low two bits, as Envoy's do; stats are shared by name.
fn proxy_define_metric(
    mut c: Ctx<'_>,
    metric_type: i32,
    np: i32,
    nl: i32,
    ret_id: i32,
) -> Result<i32> {
    guard(&c, "proxy_define_metric")?;
    let initial = match metric_type {
        metric::COUNTER => MetricValue::Counter(0),
        metric::GAUGE => MetricValue::Gauge(0),
        metric::HISTOGRAM => MetricValue::Histogram(Vec::new()),
        _ => return Ok(st(Status::BadArgument)),
    };
    let name = String::from_utf8_lossy(&bytes!(c, np, nl)).into_owned();
    c.data()
        .world()
        .metrics
        .entry(name.clone())
        .or_insert(initial);
    let d = c.data_mut();
    let id = d.next_metric_id[metric_type as usize];
    d.next_metric_id[metric_type as usize] += metric::ID_INCREMENT;
    d.metric_ids.insert(id, name);
    Ok(status_of(write_u32(&mut c, ret_id, id)))
}

/// Counters take only positive increments (BadArgument otherwise); gauges move both ways;
/// histograms cannot be incremented.
fn proxy_increment_metric(c: Ctx<'_>, id: i32, delta: i64) -> Result<i32> {
    guard(&c, "proxy_increment_metric")?;
    let Some(name) = c.data().metric_ids.get(&(id as u32)).cloned() else {
        return Ok(st(Status::NotFound));
    };
    let mut w = c.data().world();
    match w.metrics.get_mut(&name) {
        Some(MetricValue::Counter(v)) if delta > 0 => {
            *v = v.saturating_add(delta as u64);
            Ok(OK)
        }
        Some(MetricValue::Gauge(v)) => {
            *v = v.saturating_add(delta);
            Ok(OK)
        }
        Some(_) => Ok(st(Status::BadArgument)),
        None => Ok(st(Status::NotFound)),
    }
}

fn proxy_record_metric(c: Ctx<'_>, id: i32, value: i64) -> Result<i32> {
    guard(&c, "proxy_record_metric")?;
    let Some(name) = c.data().metric_ids.get(&(id as u32)).cloned() else {
        return Ok(st(Status::NotFound));
    };
    let mut w = c.data().world();
    match w.metrics.get_mut(&name) {
        Some(MetricValue::Counter(v)) => *v = value as u64,
        Some(MetricValue::Gauge(v)) => *v = value,
        Some(MetricValue::Histogram(h)) => h.push(value as u64),
        None => return Ok(st(Status::NotFound)),
    }
    Ok(OK)
}

fn proxy_get_metric(mut c: Ctx<'_>, id: i32, ret: i32) -> Result<i32> {
    guard(&c, "proxy_get_metric")?;
    let Some(name) = c.data().metric_ids.get(&(id as u32)).cloned() else {
        return Ok(st(Status::NotFound));
    };
    let value = match c.data().world().metrics.get(&name) {
        Some(MetricValue::Counter(v)) => *v,
        Some(MetricValue::Gauge(v)) => *v as u64,
        Some(MetricValue::Histogram(_)) => return Ok(st(Status::BadArgument)),
        None => return Ok(st(Status::NotFound)),
    };
    Ok(status_of(write_u64(&mut c, ret, value)))
}

fn proxy_set_effective_context(mut c: Ctx<'_>, ctx: i32) -> Result<i32> {
    guard(&c, "proxy_set_effective_context")?;
    let d = c.data_mut();
    if d.contexts.contains_key(&(ctx as u32)) {
        d.active = ctx as u32;
        Ok(OK)
    } else {
        Ok(st(Status::BadArgument))
    }
}

fn proxy_done(c: Ctx<'_>) -> Result<i32> {
    guard(&c, "proxy_done")?;
    Ok(OK)
}

/// Envoy registers a few named foreign functions; this host registers none.
#[allow(clippy::too_many_arguments)]
fn proxy_call_foreign_function(
    c: Ctx<'_>,
    _np: i32,
    _nl: i32,
    _ap: i32,
    _al: i32,
    _rp: i32,
    _rl: i32,
) -> Result<i32> {
    guard(&c, "proxy_call_foreign_function")?;
    Ok(st(Status::NotFound))
}

fn pthread_equal(_c: Ctx<'_>, a: i32, b: i32) -> i32 {
    i32::from(a == b)
}

fn emscripten_notify_memory_growth(_c: Ctx<'_>, _index: i32) {}

pub fn add_to_linker(l: &mut Linker<VmData>) -> Result<()> {
    l.func_wrap("env", "proxy_log", proxy_log)?;
    l.func_wrap("env", "proxy_get_log_level", proxy_get_log_level)?;
    l.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        proxy_get_current_time_nanoseconds,
    )?;
    l.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        proxy_set_tick_period_milliseconds,
    )?;
    l.func_wrap("env", "proxy_get_buffer_bytes", proxy_get_buffer_bytes)?;
    l.func_wrap("env", "proxy_set_buffer_bytes", proxy_set_buffer_bytes)?;
    l.func_wrap("env", "proxy_get_buffer_status", proxy_get_buffer_status)?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        proxy_get_header_map_pairs,
    )?;
    l.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        proxy_set_header_map_pairs,
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_size",
        proxy_get_header_map_size,
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_value",
        proxy_get_header_map_value,
    )?;
    l.func_wrap(
        "env",
        "proxy_add_header_map_value",
        proxy_add_header_map_value,
    )?;
    l.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        proxy_replace_header_map_value,
    )?;
    l.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        proxy_remove_header_map_value,
    )?;
    l.func_wrap("env", "proxy_get_property", proxy_get_property)?;
    l.func_wrap("env", "proxy_set_property", proxy_set_property)?;
    l.func_wrap("env", "proxy_continue_stream", proxy_continue_stream)?;
    l.func_wrap("env", "proxy_close_stream", proxy_close_stream)?;
    l.func_wrap(
        "env",
        "proxy_send_local_response",
        proxy_send_local_response,
    )?;
    l.func_wrap("env", "proxy_http_call", proxy_http_call)?;
    l.func_wrap("env", "proxy_grpc_call", proxy_grpc_call)?;
    l.func_wrap("env", "proxy_grpc_stream", proxy_grpc_stream)?;
    l.func_wrap("env", "proxy_grpc_send", proxy_grpc_send)?;
    l.func_wrap("env", "proxy_grpc_cancel", proxy_grpc_cancel)?;
    l.func_wrap("env", "proxy_grpc_close", proxy_grpc_close)?;
    l.func_wrap("env", "proxy_get_status", proxy_get_status)?;
    l.func_wrap("env", "proxy_set_shared_data", proxy_set_shared_data)?;
    l.func_wrap("env", "proxy_get_shared_data", proxy_get_shared_data)?;
    l.func_wrap(
        "env",
        "proxy_register_shared_queue",
        proxy_register_shared_queue,
    )?;
    l.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        proxy_resolve_shared_queue,
    )?;
    l.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        proxy_enqueue_shared_queue,
    )?;
    l.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        proxy_dequeue_shared_queue,
    )?;
    l.func_wrap("env", "proxy_define_metric", proxy_define_metric)?;
    l.func_wrap("env", "proxy_increment_metric", proxy_increment_metric)?;
    l.func_wrap("env", "proxy_record_metric", proxy_record_metric)?;
    l.func_wrap("env", "proxy_get_metric", proxy_get_metric)?;
    l.func_wrap(
        "env",
        "proxy_set_effective_context",
        proxy_set_effective_context,
    )?;
    l.func_wrap("env", "proxy_done", proxy_done)?;
    l.func_wrap(
        "env",
        "proxy_call_foreign_function",
        proxy_call_foreign_function,
    )?;
    l.func_wrap("env", "pthread_equal", pthread_equal)?;
    l.func_wrap(
        "env",
        "emscripten_notify_memory_growth",
        emscripten_notify_memory_growth,
    )?;
    Ok(())
}

//! `faas.coldstart`: the first request the Envoy process serves, once per process, not once
//! per worker.
//!
//! Each worker runs its own VM, so no VM can know alone whether it got the process's first
//! request. They share one key of proxy-wasm shared data ([`KEY`], process-wide for one
//! `vm_id`): `0` while unclaimed, `1` once a request took it. A write with a non-zero CAS
//! succeeds only if nobody wrote since that CAS was read (proxy-wasm-cpp-host
//! `SharedData::set`), so exactly one VM moves `0` to `1`.
//!
//! - In `on_configure` (not on the request path), a function's VM reads the key, creating
//!   it as `0` when absent, and keeps its CAS: [`ColdStart::prepare`].
//! - A VM's first request that counts spends the claim with one `proxy_set_shared_data`:
//!   [`ColdStart::claim`]. After that the VM never calls again. A CAS that went stale only
//!   because another VM created the key at the same moment (the value is still `0`) is read
//!   again and retried once; a `1` means another VM won.
//!
//! Which request counts: the VM's first recorded SERVER span, or its first unsampled request
//! (whose kind is not known without a host call). An unsampled first request spends the
//! claim without a span, so the fact is lost rather than put on a later request, which would
//! be false; a recorded CLIENT span leaves it for the first SERVER span.

use proxy_wasm::hostcalls::{get_shared_data, set_shared_data};
use proxy_wasm::types::Status;

/// The shared-data key.
pub const KEY: &str = "meshtrace.coldstart";
const UNCLAIMED: &[u8] = b"0";
const CLAIMED: &[u8] = b"1";

/// This VM's part in the process-wide cold start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColdStart {
    /// The key was unclaimed when read, with this CAS.
    Armed(u32),
    /// Nothing to do: not a function, already claimed, or this VM has tried.
    Spent,
}

/// The key's value and CAS, when it holds one.
fn read() -> Option<(Vec<u8>, u32)> {
    match get_shared_data(KEY) {
        Ok((Some(v), Some(cas))) if cas != 0 => Some((v, cas)),
        _ => None,
    }
}

impl ColdStart {
    /// Reads the key once per VM (creating it unclaimed when absent); `Spent` for a workload
    /// that is not a function, so other workloads never touch shared data.
    pub fn prepare(function: bool) -> Self {
        if !function {
            return Self::Spent;
        }
        let current = read().or_else(|| {
            // Absent: the first VM of the process creates it. A write to an absent key is
            // unconditional, so two VMs may both create it; both write `0`, which is harmless.
            set_shared_data(KEY, Some(UNCLAIMED), None).ok()?;
            read()
        });
        match current {
            Some((v, cas)) if v == UNCLAIMED => Self::Armed(cas),
            _ => Self::Spent,
        }
    }

    /// Tries to take the cold start for this request; `true` for exactly one request of the
    /// process. One host call the first time (two more only after a creation race), none
    /// after.
    pub fn claim(&mut self) -> bool {
        let Self::Armed(cas) = std::mem::replace(self, Self::Spent) else {
            return false;
        };
        match set_shared_data(KEY, Some(CLAIMED), Some(cas)) {
            Ok(()) => true,
            Err(Status::CasMismatch) => match read() {
                Some((v, fresh)) if v == UNCLAIMED => {
                    set_shared_data(KEY, Some(CLAIMED), Some(fresh)).is_ok()
                }
                _ => false,
            },
            Err(_) => false,
        }
    }
}

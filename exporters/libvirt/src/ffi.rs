//! Safe wrappers for the few libvirt calls the `virt` crate does not wrap (or wraps unsoundly).
//!
//! This is the crate's only module with `unsafe` code. Each function owns every buffer it hands
//! to libvirt, sizes it from arguments it checks, and copies the result into owned Rust values
//! before returning, so nothing libvirt allocated outlives the call:
//! - bulk stats (`virConnectGetAllDomainStats`): the record list is freed with
//!   `virDomainStatsRecordListFree` (the `virt` crate frees it with `free`, leaking the records);
//!   each record's domain is referenced (`virDomainRef`) before the list is freed;
//! - `virDomainGetVcpuPinInfo` and `virDomainGetVcpus`.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::os::raw::{c_int, c_uchar};

use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::Error as VirtError;
use virt::sys;

use crate::cpuset::CpuSet;

/// Most vCPUs or host CPUs a buffer is sized for (libvirt's own QEMU limit is 4096 vCPUs).
const MAX_ITEMS: u32 = 8192;

/// One typed parameter's value.
#[derive(Debug, Clone, PartialEq)]
pub enum TypedValue {
    Int(i64),
    UInt(u64),
    Double(f64),
    Bool(bool),
    Str(String),
}

impl TypedValue {
    /// The value as a number, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Int(v) => Some(*v as f64),
            Self::UInt(v) => Some(*v as f64),
            Self::Double(v) => Some(*v),
            Self::Bool(b) => Some(f64::from(u8::from(*b))),
            Self::Str(_) => None,
        }
    }

    /// The value as text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// The bulk stats of one domain, with its own reference to the domain.
pub struct StatsRecord {
    pub domain: Domain,
    pub params: Vec<(String, TypedValue)>,
}

impl std::fmt::Debug for StatsRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsRecord")
            .field("params", &self.params.len())
            .finish()
    }
}

/// Copies libvirt typed parameters into owned values.
///
/// # Safety
/// `params` must point to `n` valid typed parameters (or be null with `n == 0`).
unsafe fn typed_params(params: *const sys::virTypedParameter, n: c_int) -> Vec<(String, TypedValue)> {
    let mut out = Vec::with_capacity(n.max(0) as usize);
    if params.is_null() {
        return out;
    }
    for i in 0..n.max(0) as usize {
        let p = &*params.add(i);
        let field = CStr::from_ptr(p.field.as_ptr()).to_string_lossy().into_owned();
        let value = match p.type_ as u32 {
            sys::VIR_TYPED_PARAM_INT => TypedValue::Int(i64::from(p.value.i)),
            sys::VIR_TYPED_PARAM_UINT => TypedValue::UInt(u64::from(p.value.ui)),
            sys::VIR_TYPED_PARAM_LLONG => TypedValue::Int(p.value.l),
            sys::VIR_TYPED_PARAM_ULLONG => TypedValue::UInt(p.value.ul),
            sys::VIR_TYPED_PARAM_DOUBLE => TypedValue::Double(p.value.d),
            sys::VIR_TYPED_PARAM_BOOLEAN => TypedValue::Bool(p.value.b != 0),
            sys::VIR_TYPED_PARAM_STRING => {
                if p.value.s.is_null() {
                    TypedValue::Str(String::new())
                } else {
                    TypedValue::Str(CStr::from_ptr(p.value.s).to_string_lossy().into_owned())
                }
            }
            _ => continue,
        };
        out.push((field, value));
    }
    out
}

/// `virConnectGetAllDomainStats(conn, stats, flags)`: every domain with its stats.
pub fn all_domain_stats(conn: &Connect, stats: u32, flags: u32) -> Result<Vec<StatsRecord>, VirtError> {
    let mut records: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
    // SAFETY: the connection pointer is valid for the lifetime of `conn`; `records` is an out
    // parameter libvirt fills with a NULL-terminated array that we free below.
    let n = unsafe { sys::virConnectGetAllDomainStats(conn.as_ptr(), stats, &mut records, flags) };
    if n < 0 {
        return Err(VirtError::last_error());
    }
    let mut out = Vec::with_capacity(n as usize);
    if records.is_null() {
        return Ok(out);
    }
    // SAFETY: `records` holds `n` valid record pointers followed by NULL. Each domain gets its
    // own reference before the list (and the list's references) is freed.
    unsafe {
        for i in 0..n as usize {
            let rec = *records.add(i);
            if rec.is_null() {
                break;
            }
            let dom = (*rec).dom;
            if dom.is_null() || sys::virDomainRef(dom) < 0 {
                continue;
            }
            let params = typed_params((*rec).params, (*rec).nparams);
            out.push(StatsRecord {
                domain: Domain::from_ptr(dom),
                params,
            });
        }
        sys::virDomainStatsRecordListFree(records);
    }
    Ok(out)
}

fn maplen(ncpus: u32) -> usize {
    (ncpus.clamp(1, MAX_ITEMS) as usize).div_ceil(8)
}

/// `virDomainGetVcpuPinInfo`: the affinity libvirt holds for each vCPU (`flags`: live/config).
pub fn vcpu_pin_info(dom: &Domain, nvcpus: u32, ncpus: u32, flags: u32) -> Result<Vec<CpuSet>, VirtError> {
    let nvcpus = nvcpus.clamp(1, MAX_ITEMS);
    let len = maplen(ncpus);
    let mut buf = vec![0u8; nvcpus as usize * len];
    // SAFETY: `buf` holds `nvcpus * len` bytes as the call requires.
    let n = unsafe {
        sys::virDomainGetVcpuPinInfo(
            dom.as_ptr(),
            nvcpus as c_int,
            buf.as_mut_ptr() as *mut c_uchar,
            len as c_int,
            flags,
        )
    };
    if n < 0 {
        return Err(VirtError::last_error());
    }
    Ok((0..(n as usize).min(nvcpus as usize))
        .map(|i| CpuSet::from_cpumap(&buf[i * len..(i + 1) * len], ncpus))
        .collect())
}

/// One vCPU as `virDomainGetVcpus` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuInfo {
    pub number: u32,
    /// `virVcpuState`: 0 offline, 1 running, 2 blocked.
    pub state: i32,
    pub cpu_time_ns: u64,
    /// Host CPU it last ran on (-1 if unknown).
    pub cpu: i32,
    /// Its affinity as the hypervisor (for QEMU: the kernel) applies it.
    pub affinity: CpuSet,
}

/// `virDomainGetVcpus`: live vCPU state, placement and affinity of a running domain.
pub fn vcpus(dom: &Domain, nvcpus: u32, ncpus: u32) -> Result<Vec<VcpuInfo>, VirtError> {
    let nvcpus = nvcpus.clamp(1, MAX_ITEMS);
    let len = maplen(ncpus);
    let mut info = vec![
        sys::virVcpuInfo {
            number: 0,
            state: 0,
            cpuTime: 0,
            cpu: -1,
        };
        nvcpus as usize
    ];
    let mut maps = vec![0u8; nvcpus as usize * len];
    // SAFETY: `info` holds `nvcpus` entries and `maps` `nvcpus * len` bytes.
    let n = unsafe {
        sys::virDomainGetVcpus(
            dom.as_ptr(),
            info.as_mut_ptr(),
            nvcpus as c_int,
            maps.as_mut_ptr() as *mut c_uchar,
            len as c_int,
        )
    };
    if n < 0 {
        return Err(VirtError::last_error());
    }
    Ok(info
        .iter()
        .take((n as usize).min(nvcpus as usize))
        .enumerate()
        .map(|(i, v)| VcpuInfo {
            number: v.number,
            state: v.state,
            cpu_time_ns: v.cpuTime,
            cpu: v.cpu,
            affinity: CpuSet::from_cpumap(&maps[i * len..(i + 1) * len], ncpus),
        })
        .collect())
}

/// Stops libvirt from printing every error to stderr (errors are returned and logged instead).
pub fn quiet_libvirt_errors() {
    virt::error::clear_error_callback();
}

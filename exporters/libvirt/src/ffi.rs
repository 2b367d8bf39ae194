//! Safe wrappers for the few libvirt calls the `virt` crate does not wrap (or wraps unsoundly).
//!
//! This is the crate's only module with `unsafe` code. Each function owns every buffer it hands
//! to libvirt, sizes it from arguments it checks, and copies the result into owned Rust values
//! before returning, so nothing libvirt allocated outlives the call:
//! - bulk stats (`virConnectGetAllDomainStats`): the record list is freed with
//!   `virDomainStatsRecordListFree` (the `virt` crate frees it with `free`, leaking the records);
//!   each record's domain is referenced (`virDomainRef`) before the list is freed;
//! - `virDomainGetVcpuPinInfo` and `virDomainGetVcpus`;
//! - `virDomainGetJobStats`: the parameters are freed with `virTypedParamsFree` (the `virt`
//!   crate hands libvirt's allocation to Rust's allocator and leaks its strings);
//! - domain events (`virConnectDomainEventRegisterAny`) that mark a domain's XML as changed, run
//!   by libvirt's default event loop on one dedicated thread; migration iterations mark the
//!   domain as one with a job only (see [`ChangeSink::mark_job`]);
#![allow(unsafe_code)]

use std::collections::HashSet;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_uchar, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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
unsafe fn typed_params(
    params: *const sys::virTypedParameter,
    n: c_int,
) -> Vec<(String, TypedValue)> {
    let mut out = Vec::with_capacity(n.max(0) as usize);
    if params.is_null() {
        return out;
    }
    for i in 0..n.max(0) as usize {
        let p = &*params.add(i);
        let field = CStr::from_ptr(p.field.as_ptr())
            .to_string_lossy()
            .into_owned();
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
pub fn all_domain_stats(
    conn: &Connect,
    stats: u32,
    flags: u32,
) -> Result<Vec<StatsRecord>, VirtError> {
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
pub fn vcpu_pin_info(
    dom: &Domain,
    nvcpus: u32,
    ncpus: u32,
    flags: u32,
) -> Result<Vec<CpuSet>, VirtError> {
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

/// `virDomainGetJobStats(dom, 0)`: the type of the domain's current job (0: none) and the
/// fields libvirt filled for it.
pub fn job_stats(dom: &Domain) -> Result<(i32, Vec<(String, TypedValue)>), VirtError> {
    let mut kind: c_int = 0;
    let mut params: sys::virTypedParameterPtr = std::ptr::null_mut();
    let mut n: c_int = 0;
    // SAFETY: `kind`, `params` and `n` are out parameters; libvirt allocates `params` (n
    // entries), which we copy and then free with virTypedParamsFree.
    let r = unsafe { sys::virDomainGetJobStats(dom.as_ptr(), &mut kind, &mut params, &mut n, 0) };
    if r < 0 {
        return Err(VirtError::last_error());
    }
    // SAFETY: on success `params` holds `n` typed parameters (or is null with n == 0).
    let fields = unsafe { typed_params(params, n) };
    if !params.is_null() {
        // SAFETY: allocated by libvirt above, freed once.
        unsafe { sys::virTypedParamsFree(params, n) };
    }
    Ok((kind, fields))
}

/// Stops libvirt from printing every error to stderr (errors are returned and logged instead).
pub fn quiet_libvirt_errors() {
    virt::error::clear_error_callback();
}

/// Domains whose XML changed since the last scrape, filled by libvirt's event callbacks; and,
/// once someone asks for them ([`ChangeSink::take_jobs`]), the domains with any event since
/// the last ask, which may have started a job (the `job` collector looks at those only).
#[derive(Debug, Default)]
pub struct ChangeSink {
    dirty: Mutex<HashSet<String>>,
    events: AtomicU64,
    jobs: Mutex<HashSet<String>>,
    /// Whether job hints are taken (else they are not kept: nobody would empty the set).
    wants_jobs: std::sync::atomic::AtomicBool,
}

impl ChangeSink {
    /// Takes the UUIDs marked since the last call.
    pub fn take(&self) -> HashSet<String> {
        std::mem::take(&mut *common::sync::lock(&self.dirty))
    }

    /// Events received since start.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Marks a domain (by UUID) as changed (and as one that may have a job).
    pub fn mark(&self, uuid: String) {
        self.events.fetch_add(1, Ordering::Relaxed);
        self.hint_job(&uuid);
        common::sync::lock(&self.dirty).insert(uuid);
    }

    /// Marks a domain as one with a job (a migration iteration), its XML unchanged.
    pub fn mark_job(&self, uuid: String) {
        self.events.fetch_add(1, Ordering::Relaxed);
        self.hint_job(&uuid);
    }

    fn hint_job(&self, uuid: &str) {
        if self.wants_jobs.load(Ordering::Relaxed) {
            common::sync::lock(&self.jobs).insert(uuid.to_string());
        }
    }

    /// Takes the domains with an event since the last call (the first call starts keeping
    /// them).
    pub fn take_jobs(&self) -> HashSet<String> {
        self.wants_jobs.store(true, Ordering::Relaxed);
        std::mem::take(&mut *common::sync::lock(&self.jobs))
    }
}

static EVENT_LOOP: OnceLock<Result<(), String>> = OnceLock::new();

/// Registers libvirt's default event loop and runs it on a dedicated thread, once per process.
/// Must happen before the first connection is opened for that connection to deliver events.
pub fn start_event_loop() -> Result<(), String> {
    EVENT_LOOP
        .get_or_init(|| {
            virt::event::event_register_default_impl().map_err(|e| e.to_string())?;
            std::thread::Builder::new()
                .name("libvirt-events".into())
                .spawn(|| loop {
                    if let Err(e) = virt::event::event_run_default_impl() {
                        tracing::warn!(error = %e, "libvirt event loop iteration failed");
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                })
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// Marks the event's domain in the sink behind `opaque`.
///
/// # Safety
/// `opaque` must be the pointer given at registration (an `Arc<ChangeSink>` still alive) and
/// `dom` a valid domain for the duration of the callback.
unsafe fn mark(dom: sys::virDomainPtr, opaque: *mut c_void) {
    if dom.is_null() || opaque.is_null() {
        return;
    }
    let sink = &*(opaque as *const ChangeSink);
    let mut buf = [0 as c_char; 64];
    if sys::virDomainGetUUIDString(dom, buf.as_mut_ptr()) == 0 {
        sink.mark(CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned());
    }
}

unsafe extern "C" fn on_lifecycle(
    _c: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    _event: c_int,
    _detail: c_int,
    opaque: *mut c_void,
) {
    mark(dom, opaque);
}

unsafe extern "C" fn on_metadata(
    _c: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    _kind: c_int,
    _ns: *const c_char,
    opaque: *mut c_void,
) {
    mark(dom, opaque);
}

unsafe extern "C" fn on_migration_iteration(
    _c: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    _iteration: c_int,
    opaque: *mut c_void,
) {
    if dom.is_null() || opaque.is_null() {
        return;
    }
    let sink = &*(opaque as *const ChangeSink);
    let mut buf = [0 as c_char; 64];
    if sys::virDomainGetUUIDString(dom, buf.as_mut_ptr()) == 0 {
        sink.mark_job(CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned());
    }
}

unsafe extern "C" fn on_params(
    _c: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    _params: sys::virTypedParameterPtr,
    _n: c_int,
    opaque: *mut c_void,
) {
    mark(dom, opaque);
}

unsafe extern "C" fn on_device(
    _c: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    _alias: *const c_char,
    opaque: *mut c_void,
) {
    mark(dom, opaque);
}

unsafe extern "C" fn free_sink(opaque: *mut c_void) {
    if !opaque.is_null() {
        drop(Arc::from_raw(opaque as *const ChangeSink));
    }
}

/// Registers callbacks for the events that change a domain's XML (lifecycle, metadata, tunables
/// such as pinning, devices added or removed, completed jobs such as migrations), and migration
/// iterations (a job, the XML unchanged). Returns how many registrations succeeded; a driver
/// without events returns an error.
pub fn watch_domain_changes(conn: &Connect, sink: &Arc<ChangeSink>) -> Result<usize, VirtError> {
    type Generic = unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void);
    type Lifecycle =
        unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, c_int, c_int, *mut c_void);
    type Metadata = unsafe extern "C" fn(
        sys::virConnectPtr,
        sys::virDomainPtr,
        c_int,
        *const c_char,
        *mut c_void,
    );
    type Params = unsafe extern "C" fn(
        sys::virConnectPtr,
        sys::virDomainPtr,
        sys::virTypedParameterPtr,
        c_int,
        *mut c_void,
    );
    type Device =
        unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *const c_char, *mut c_void);
    type Iteration =
        unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, c_int, *mut c_void);
    // SAFETY: libvirt calls each callback with the signature of its event ID, as C code does
    // through VIR_DOMAIN_EVENT_CALLBACK; the transmutes only erase the signature for storage.
    let callbacks: [(u32, Generic); 7] = unsafe {
        [
            (
                sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                std::mem::transmute::<Lifecycle, Generic>(on_lifecycle),
            ),
            (
                sys::VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,
                std::mem::transmute::<Metadata, Generic>(on_metadata),
            ),
            (
                sys::VIR_DOMAIN_EVENT_ID_TUNABLE,
                std::mem::transmute::<Params, Generic>(on_params),
            ),
            (
                sys::VIR_DOMAIN_EVENT_ID_JOB_COMPLETED,
                std::mem::transmute::<Params, Generic>(on_params),
            ),
            (
                sys::VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
                std::mem::transmute::<Device, Generic>(on_device),
            ),
            (
                sys::VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
                std::mem::transmute::<Device, Generic>(on_device),
            ),
            (
                sys::VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION,
                std::mem::transmute::<Iteration, Generic>(on_migration_iteration),
            ),
        ]
    };
    let mut ok = 0;
    let mut first_err = None;
    for (id, cb) in callbacks {
        let opaque = Arc::into_raw(Arc::clone(sink)) as *mut c_void;
        // SAFETY: `opaque` is an owned Arc reference released by `free_sink` when libvirt drops
        // the callback (deregistration or connection close), or here if registration fails.
        let r = unsafe {
            sys::virConnectDomainEventRegisterAny(
                conn.as_ptr(),
                std::ptr::null_mut(),
                id as c_int,
                Some(cb),
                opaque,
                Some(free_sink),
            )
        };
        if r < 0 {
            // SAFETY: libvirt did not take the reference.
            unsafe { free_sink(opaque) };
            first_err.get_or_insert_with(VirtError::last_error);
        } else {
            ok += 1;
        }
    }
    match (ok, first_err) {
        (0, Some(e)) => Err(e),
        _ => Ok(ok),
    }
}

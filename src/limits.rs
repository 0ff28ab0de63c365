//! The process's open-file limit. The daemon holds one descriptor per scrape in flight and per
//! status API connection, the sim three listeners per droplet; the soft limit (often 1,024) is
//! raised to the hard limit at start so neither runs out long before it must.

/// Raises the open-file soft limit to the hard limit. Returns the limit in force.
pub fn raise_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    // rlim_t is u64 on Linux; the conversion keeps other platforms compiling.
    #[allow(clippy::unnecessary_cast)]
    Some(limit.rlim_cur as u64)
}

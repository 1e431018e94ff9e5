//! Memory of this process and of the machine, as Linux reports it (`/proc`); `None`
//! elsewhere or when the files cannot be read.

/// Resident memory of this process now (`VmRSS` of `/proc/self/status`).
pub fn resident_bytes() -> Option<u64> {
    status_field("VmRSS:")
}

/// Highest resident memory of this process so far (`VmHWM`).
pub fn peak_resident_bytes() -> Option<u64> {
    status_field("VmHWM:")
}

/// Resident anonymous memory (heap, stacks, the KV cache): `RssAnon`.
pub fn resident_anon_bytes() -> Option<u64> {
    status_field("RssAnon:")
}

/// Resident file-backed memory (the mapped model, the executable): `RssFile`.
pub fn resident_file_bytes() -> Option<u64> {
    status_field("RssFile:")
}

/// Memory the machine can still give without swapping (`MemAvailable` of `/proc/meminfo`).
pub fn available_bytes() -> Option<u64> {
    kib_field(
        &std::fs::read_to_string("/proc/meminfo").ok()?,
        "MemAvailable:",
    )
}

fn status_field(name: &str) -> Option<u64> {
    kib_field(&std::fs::read_to_string("/proc/self/status").ok()?, name)
}

/// The value of a `Name:   1234 kB` line, in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kib_lines() {
        let text = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(kib_field(text, "VmRSS:"), Some(1 << 20));
        assert_eq!(kib_field(text, "VmHWM:"), Some(2 << 20));
        assert_eq!(kib_field(text, "RssAnon:"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_resident_on_linux() {
        let rss = resident_bytes().expect("VmRSS on Linux");
        assert!(rss > 1 << 20 && peak_resident_bytes().expect("VmHWM") >= rss);
        assert!(
            resident_anon_bytes().expect("RssAnon") > 0
                && resident_file_bytes().expect("RssFile") > 0
        );
        assert!(available_bytes().expect("MemAvailable") > 0);
    }
}

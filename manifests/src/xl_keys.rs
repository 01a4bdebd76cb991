//! Keys that Xen's `xl.cfg` has and domain files here do not support yet, so that such a
//! key gets "not supported yet" rather than "unknown key".

/// Keys of xl.cfg (general, kernel, devices, HVM and PVH options) we do not implement yet.
#[rustfmt::skip]
const UNSUPPORTED_XL_KEYS: &[&str] = &[
    // General.
    "builder", "pool", "maxvcpus", "cpus", "cpus_soft", "cpu_weight", "cap", "maxmem",
    "vnuma", "on_watchdog", "on_soft_reset", "seclabel", "init_seclabel", "max_grant_frames",
    "max_maptrack_frames", "max_grant_version", "nomigrate", "driver_domain", "uuid",
    "vmtrace_buf_kb", "vpmu", "passthrough", "claim_mode", "xend_suspend_evtchn_compat",
    // Kernel and boot.
    "bootloader", "bootloader_args", "firmware", "bios", "pvshim",
    "pvshim_path", "pvshim_cmdline", "pvshim_extra", "bios_override", "firmware_override",
    "smbios_firmware", "acpi_firmware", "device_tree",
    // Devices.
    "vtpm", "p9", "pvcalls", "vfb", "vkb", "channel", "rdm", "usbctrl",
    "usbdev", "pci_permissive", "pci_msitranslate", "pci_seize", "pci_power_mgmt",
    "gfx_passthru", "iomem", "irqs", "max_event_channels", "vdispl", "vsnd", "tee",
    "dtdev", "vuart", "e820_host", "serial", "usb", "usbdevice", "usbversion",
    // HVM and PVH platform.
    "acpi", "acpi_s3", "acpi_s4", "acpi_laptop_slate", "apic", "nx", "hap", "oos", "pae",
    "shadow_memory", "timer_mode", "hpet", "vpt_align", "altp2m", "altp2mhvm", "nestedhvm",
    "cpuid", "viridian", "tsc_mode", "localtime", "rtc_timeoffset", "mca_caps", "ms_vm_genid",
    "xen_platform_pci", "hdtype", "boot", "soundhw", "stdvga", "vga", "videoram", "nographic",
    "msi", "gic_version", "dm_restrict",
    // Display.
    "vnc", "vnclisten", "vncdisplay", "vncunused", "vncpasswd", "keymap", "sdl", "opengl",
    "spice",
];

/// Families of xl.cfg keys by prefix (`device_model_version`, `spicehost`, ...).
const UNSUPPORTED_XL_PREFIXES: &[&str] = &["device_model_", "spice", "vnc", "sdl", "usb"];

/// Whether `key` is an xl.cfg key that domain files do not support yet.
pub(crate) fn is_unsupported_xl_key(key: &str) -> bool {
    UNSUPPORTED_XL_KEYS.contains(&key)
        || UNSUPPORTED_XL_PREFIXES
            .iter()
            .any(|prefix| key.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_xl_keys_and_families() {
        for key in [
            "vtpm",
            "pci_permissive",
            "maxmem",
            "maxvcpus",
            "builder",
            "bootloader",
            "bootloader_args",
        ] {
            assert!(is_unsupported_xl_key(key), "{key}");
        }
        assert!(is_unsupported_xl_key("device_model_version"));
        assert!(is_unsupported_xl_key("spiceport"));
        assert!(!is_unsupported_xl_key("memroy"));
        assert!(!is_unsupported_xl_key("device"));
        // Supported, so listed in DOMAIN_KEYS instead.
        assert!(!is_unsupported_xl_key("ioports"));
        assert!(!is_unsupported_xl_key("pci"));
        assert!(!is_unsupported_xl_key("disk"));
        assert!(!is_unsupported_xl_key("vif"));
        assert!(!is_unsupported_xl_key("ramdisk"));
        assert!(!is_unsupported_xl_key("root"));
    }
}

//! The BTF of a Debian kernel image, without booting it: the x86 boot header says where the
//! compressed kernel is (`payload_offset`, `payload_length`, Documentation/arch/x86/boot.rst);
//! decompressed, it is the kernel's ELF image, whose `.BTF` section is what the running kernel
//! exports as `/sys/kernel/btf/vmlinux`.

use std::{
    fs,
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, bail};
use object::{Object, ObjectSection};

/// Offsets in the real-mode boot header (boot protocol 2.08+).
const SETUP_SECTS: usize = 0x1f1;
const HEADER_MAGIC: usize = 0x202;
const PAYLOAD_OFFSET: usize = 0x248;
const PAYLOAD_LENGTH: usize = 0x24c;

pub fn extract(vmlinuz: &Path, btf_out: &Path) -> anyhow::Result<()> {
    let image = fs::read(vmlinuz).with_context(|| format!("reading {}", vmlinuz.display()))?;
    let payload = payload(&image)?;
    let elf = decompress(payload)?;
    let file = object::File::parse(&*elf).context("the decompressed kernel is not an ELF file")?;
    let section = file
        .section_by_name(".BTF")
        .context("the kernel has no .BTF section (built without CONFIG_DEBUG_INFO_BTF?)")?;
    fs::write(btf_out, section.data()?)
        .with_context(|| format!("writing {}", btf_out.display()))?;
    Ok(())
}

fn payload(image: &[u8]) -> anyhow::Result<&[u8]> {
    let u32_at = |at: usize| -> anyhow::Result<usize> {
        let bytes = image
            .get(at..at + 4)
            .context("the image is too short for an x86 boot header")?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as usize)
    };
    if image.get(HEADER_MAGIC..HEADER_MAGIC + 4) != Some(b"HdrS") {
        bail!("not an x86 bzImage (no HdrS boot header)");
    }
    let setup_sects = match image[SETUP_SECTS] {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + u32_at(PAYLOAD_OFFSET)?;
    let length = u32_at(PAYLOAD_LENGTH)?;
    image
        .get(start..start + length)
        .context("the boot header's payload lies outside the image")
}

/// Decompresses with the tool for the payload's format (Debian builds with xz; zstd and gzip
/// are the other common choices).
fn decompress(payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let tool: &[&str] = if payload.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        &["xz", "-dc"]
    } else if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        &["zstd", "-dc"]
    } else if payload.starts_with(&[0x1f, 0x8b]) {
        &["gzip", "-dc"]
    } else {
        bail!(
            "unknown kernel compression (magic {:02x?})",
            &payload[..6.min(payload.len())]
        );
    };
    let mut child = Command::new(tool[0])
        .args(&tool[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", tool[0]))?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = payload.to_vec();
    // Fed from a thread: the tool's output pipe would fill while we are still writing.
    let feeder = std::thread::spawn(move || {
        // xz reports trailing padding after the stream; what matters is the output.
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output()?;
    let _ = feeder.join();
    if out.stdout.is_empty() {
        bail!("{} produced nothing from the kernel payload", tool[0]);
    }
    Ok(out.stdout)
}

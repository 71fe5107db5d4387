//! Device selection: `auto`, `cpu`, `cuda:N` (or `cuda`), `metal`.

use crate::{Error, Result};
use candle_core::Device;

/// The device a `--device` value names. `auto` picks CUDA, then Metal, then the CPU; a
/// named device that is not available is an error (never a silent CPU run).
pub fn parse(spec: &str) -> Result<Device> {
    let unavailable = |e: candle_core::Error| Error::Device(spec.to_string(), e.to_string());
    match spec {
        "auto" => {
            // A build with GPU support may run where no GPU (or driver) is present: `auto`
            // then falls back to the CPU instead of failing.
            if candle_core::utils::cuda_is_available() {
                match Device::new_cuda(0) {
                    Ok(d) => return Ok(d),
                    Err(e) => {
                        tracing::warn!("CUDA is compiled in but unusable ({e}); using the CPU")
                    }
                }
            }
            if candle_core::utils::metal_is_available() {
                match Device::new_metal(0) {
                    Ok(d) => return Ok(d),
                    Err(e) => {
                        tracing::warn!("Metal is compiled in but unusable ({e}); using the CPU")
                    }
                }
            }
            Ok(Device::Cpu)
        }
        "cpu" => Ok(Device::Cpu),
        "metal" => Device::new_metal(0).map_err(unavailable),
        "cuda" => Device::new_cuda(0).map_err(unavailable),
        s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Device::new_cuda(n).map_err(unavailable),
            _ => Err(Error::Device(
                spec.to_string(),
                "expected auto, cpu, cuda, cuda:N or metal".into(),
            )),
        },
    }
}

/// A short stable name for a device, stored with every trial (`cpu`, `cuda:0`, `metal:0`).
pub fn name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert!(parse("cpu").unwrap().is_cpu());
        assert_eq!(name(&parse("cpu").unwrap()), "cpu");
        let e = parse("tpu").unwrap_err().to_string();
        assert!(
            e.contains("expected auto, cpu, cuda, cuda:N or metal"),
            "{e}"
        );
        if !candle_core::utils::cuda_is_available() {
            assert!(parse("cuda:0").is_err());
            assert!(parse("auto").unwrap().is_cpu() || candle_core::utils::metal_is_available());
        }
    }
}

//! `--device auto|cpu|cuda|cuda:N`, resolved against what libtorch sees.

use std::fmt;
use std::str::FromStr;
use tch::{Cuda, Device};

/// A device as the user wrote it; [`DeviceArg::resolve`] turns it into a [`tch::Device`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceArg {
    /// The first CUDA device if libtorch sees one, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// A CUDA device by ordinal (`cuda` means `cuda:0`).
    Cuda(usize),
}

/// A device that was asked for but is not there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device `{0}`: expected auto, cpu, cuda or cuda:N")]
    Parse(String),
    #[error(
        "device cuda:{asked} requested but libtorch sees {count} CUDA device(s) (run `gl env`)"
    )]
    Unavailable { asked: usize, count: i64 },
}

impl FromStr for DeviceArg {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, DeviceError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceArg::Auto),
            "cpu" => Ok(DeviceArg::Cpu),
            "cuda" | "gpu" => Ok(DeviceArg::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceArg::Cuda)
                .ok_or_else(|| DeviceError::Parse(s.to_string())),
        }
    }
}

impl fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceArg::Auto => write!(f, "auto"),
            DeviceArg::Cpu => write!(f, "cpu"),
            DeviceArg::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl DeviceArg {
    /// The concrete device; an explicit CUDA ordinal that does not exist is an error, never a
    /// silent fall-back to the CPU.
    pub fn resolve(self) -> Result<Device, DeviceError> {
        match self {
            DeviceArg::Cpu => Ok(Device::Cpu),
            DeviceArg::Auto => Ok(Device::cuda_if_available()),
            DeviceArg::Cuda(i) => {
                let count = Cuda::device_count();
                if (i as i64) < count {
                    Ok(Device::Cuda(i))
                } else {
                    Err(DeviceError::Unavailable { asked: i, count })
                }
            }
        }
    }
}

/// `cpu` or `cuda:N`: how run directories, records and task arguments name a device.
pub fn name(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Waits for queued kernels on `device` (no-op on the CPU): benchmarks read the clock after it.
pub fn synchronize(device: Device) {
    if let Device::Cuda(i) = device {
        Cuda::synchronize(i as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!("auto".parse(), Ok(DeviceArg::Auto));
        assert_eq!("CPU".parse(), Ok(DeviceArg::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceArg::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceArg::Cuda(3)));
        assert!(matches!(
            "cuda:x".parse::<DeviceArg>(),
            Err(DeviceError::Parse(_))
        ));
        assert!(matches!(
            "tpu".parse::<DeviceArg>(),
            Err(DeviceError::Parse(_))
        ));
    }

    #[test]
    fn missing_cuda_ordinal_is_an_error() {
        let count = Cuda::device_count();
        let r = DeviceArg::Cuda(count as usize + 1).resolve();
        assert!(matches!(r, Err(DeviceError::Unavailable { .. })), "{r:?}");
        assert_eq!(DeviceArg::Cpu.resolve(), Ok(Device::Cpu));
    }
}

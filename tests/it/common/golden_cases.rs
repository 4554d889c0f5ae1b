//! What the golden tests share: the device they run on, reading a directory of reference cases
//! (`cases.json`, a list of objects each with its `name`, and one NumPy `<name>.npz` of arrays
//! per case) and the relative error they are measured in.

use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The CPU, or the first GPU with `GL_TEST_DEVICE=cuda`: GPU is opt-in, the same checks run
/// there.
pub fn device() -> Device {
    match std::env::var("GL_TEST_DEVICE").as_deref() {
        Ok("cuda") => Device::Cuda(0),
        _ => Device::Cpu,
    }
}

/// One case of a golden directory.
pub struct GoldenCase {
    pub name: String,
    /// The case's object in `cases.json`.
    pub params: serde_json::Value,
    /// The arrays of `<name>.npz`, by name.
    pub arrays: HashMap<String, Tensor>,
}

/// Every case of `dir`, in the order of `cases.json`.
pub fn read_cases(dir: &Path) -> Vec<GoldenCase> {
    let text = std::fs::read_to_string(dir.join("cases.json"))
        .unwrap_or_else(|e| panic!("golden cases missing under {}: {e}", dir.display()));
    let list: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    list.into_iter()
        .map(|params| {
            let name = params["name"].as_str().unwrap().to_string();
            let arrays = Tensor::read_npz(dir.join(format!("{name}.npz")))
                .unwrap()
                .into_iter()
                .collect();
            GoldenCase {
                name,
                params,
                arrays,
            }
        })
        .collect()
}

/// max|ours − want| / max(max|want|, `floor`), with `ours` taken to the host in f64 (`want` is
/// a golden array: f64 on the host).
pub fn rel_error(ours: &Tensor, want: &Tensor, floor: f64) -> f64 {
    let ours = ours.to_device(Device::Cpu).to_kind(Kind::Double);
    assert_eq!(ours.size(), want.size());
    let d = (&ours - want).abs().max().double_value(&[]);
    d / want.abs().max().double_value(&[]).max(floor)
}

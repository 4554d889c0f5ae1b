//! The few protobuf messages an event file holds, encoded by hand: TensorFlow's `Event` and
//! `Summary` (scalars as `simple_value`), and the HParams plugin's `HParamsPluginData` with its
//! `Experiment`, `SessionStartInfo` and `SessionEndInfo` (tensorboard/plugins/hparams/*.proto).
//! Field numbers are those of tensorboard 2.21.0's protos; the pytest
//! `tests/reference/test_tensorboard.py` reads what this writes with tensorboard's own parser.

/// A protobuf message under construction: fields appended in any order.
#[derive(Debug, Default, Clone)]
pub struct Msg(Vec<u8>);

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Msg {
    fn key(&mut self, field: u32, wire: u8) {
        put_varint(&mut self.0, (u64::from(field) << 3) | u64::from(wire));
    }
    /// An integer, bool or enum field.
    pub fn varint(mut self, field: u32, v: u64) -> Self {
        self.key(field, VARINT);
        put_varint(&mut self.0, v);
        self
    }
    /// A `double` field.
    pub fn double(mut self, field: u32, v: f64) -> Self {
        self.key(field, FIXED64);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A `float` field.
    pub fn float(mut self, field: u32, v: f32) -> Self {
        self.key(field, FIXED32);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A `bytes` or `string` field.
    pub fn bytes(mut self, field: u32, v: &[u8]) -> Self {
        self.key(field, LEN);
        put_varint(&mut self.0, v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }
    /// A `string` field.
    pub fn string(self, field: u32, v: &str) -> Self {
        self.bytes(field, v.as_bytes())
    }
    /// An embedded message field.
    pub fn msg(self, field: u32, m: &Msg) -> Self {
        self.bytes(field, &m.0)
    }
    /// The encoded message.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// The first event of every file: `Event{wall_time, file_version: "brain.Event:2"}`.
pub fn file_version_event(wall_time: f64) -> Vec<u8> {
    Msg::default()
        .double(1, wall_time)
        .string(3, "brain.Event:2")
        .into_bytes()
}

/// `Event{wall_time, step, summary: Summary{value: values}}`.
pub fn summary_event(wall_time: f64, step: i64, values: &[Msg]) -> Vec<u8> {
    let summary = values.iter().fold(Msg::default(), |s, v| s.msg(1, v));
    Msg::default()
        .double(1, wall_time)
        .varint(2, step as u64)
        .msg(5, &summary)
        .into_bytes()
}

/// A scalar `Summary.Value{tag, simple_value}` (what `tf.summary.scalar` v1 writes).
pub fn scalar(tag: &str, value: f64) -> Msg {
    Msg::default().string(1, tag).float(2, value as f32)
}

/// A value of an hparam: `google.protobuf.Value`'s number, string and bool kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum HValue {
    Number(f64),
    Text(String),
    Bool(bool),
}

impl HValue {
    fn encode(&self) -> Msg {
        match self {
            HValue::Number(x) => Msg::default().double(2, *x),
            HValue::Text(s) => Msg::default().string(3, s),
            HValue::Bool(b) => Msg::default().varint(4, u64::from(*b)),
        }
    }
    /// The HParams plugin's `DataType` of the value.
    fn data_type(&self) -> u64 {
        match self {
            HValue::Text(_) => 1,
            HValue::Bool(_) => 2,
            HValue::Number(_) => 3,
        }
    }
}

/// A metric of the HParams table: a scalar tag of the session's own run.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub tag: String,
    pub display: String,
    /// Measured on the validation split (else on the test split: "unknown" to the plugin).
    pub validation: bool,
}

/// The HParams plugin's summary value: tag, `metadata.plugin_data{plugin_name: "hparams",
/// content: HParamsPluginData}`, and the empty float tensor the plugin's writer attaches.
fn hparams_value(tag: &str, field: u32, data: &Msg) -> Msg {
    let content = Msg::default().msg(field, data); // HParamsPluginData, version 0
    let plugin = Msg::default()
        .string(1, "hparams")
        .bytes(2, &content.into_bytes());
    let metadata = Msg::default().msg(1, &plugin);
    // TensorProto{dtype: DT_FLOAT, tensor_shape: {dim: [{size: 0}]}}.
    let null_tensor = Msg::default()
        .varint(1, 1)
        .msg(2, &Msg::default().msg(2, &Msg::default()));
    Msg::default()
        .string(1, tag)
        .msg(9, &metadata)
        .msg(8, &null_tensor)
}

/// `_hparams_/experiment`: the hparams (name and type) and metrics the HParams tab shows.
pub fn experiment(hparams: &[(String, HValue)], metrics: &[Metric], created: f64) -> Msg {
    let mut e = Msg::default().double(3, created);
    for (name, v) in hparams {
        let info = Msg::default().string(1, name).varint(4, v.data_type());
        e = e.msg(4, &info);
    }
    for m in metrics {
        let name = Msg::default().string(2, &m.tag);
        let info = Msg::default()
            .msg(1, &name)
            .string(3, &m.display)
            .varint(5, if m.validation { 2 } else { 0 });
        e = e.msg(5, &info);
    }
    hparams_value("_hparams_/experiment", 2, &e)
}

/// `_hparams_/session_start_info`: this run's value of every hparam.
pub fn session_start(hparams: &[(String, HValue)], start: f64) -> Msg {
    let mut s = Msg::default();
    for (name, v) in hparams {
        let entry = Msg::default().string(1, name).msg(2, &v.encode());
        s = s.msg(1, &entry);
    }
    hparams_value("_hparams_/session_start_info", 3, &s.double(5, start))
}

/// How a session ended (the plugin's `Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success = 1,
    Failure = 2,
}

/// `_hparams_/session_end_info`.
pub fn session_end(status: Status, end: f64) -> Msg {
    let s = Msg::default().varint(1, status as u64).double(2, end);
    hparams_value("_hparams_/session_end_info", 4, &s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte strings tensorboard 2.21.0's protobuf classes serialise for the same messages.
    #[test]
    fn messages_encode_as_protobuf_does() {
        assert_eq!(
            hex::encode(file_version_event(2.0)),
            "0900000000000000401a0d627261696e2e4576656e743a32"
        );
        // Event(wall_time=2.0, file_version="brain.Event:2") and Event(wall_time=1.5, step=300, summary=Summary(value=[Value(tag="a", simple_value=0.25)]))
        assert_eq!(
            hex::encode(summary_event(1.5, 300, &[scalar("a", 0.25)])),
            "09000000000000f83f10ac022a0a0a080a0161150000803e"
        );
    }
}

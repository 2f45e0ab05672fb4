//! pprof's `profile.proto` (github.com/google/pprof/proto/profile.proto), the messages a
//! sampled Python profile needs, encoded with `prost` and gzipped: what `go tool pprof` and
//! continuous-profiling backends read. Strings live once in `string_table` (index 0 is "").

use std::collections::HashMap;
use std::io::{self, Write};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(int64, tag = "1")]
    pub key: i64,
    #[prost(int64, tag = "2")]
    pub str: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}

/// Builds a [`Profile`] of sampled Python stacks: one location per (function, file, line),
/// one function per (name, file).
pub struct Builder {
    p: Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(String, String), u64>,
    locations: HashMap<(u64, i64), u64>,
    samples: HashMap<(Vec<u64>, i64), usize>,
    thread_key: i64,
}

impl Builder {
    /// `period_ns`: the sampling interval.
    pub fn new(period_ns: i64, time_nanos: i64) -> Builder {
        let mut b = Builder {
            p: Profile::default(),
            strings: HashMap::new(),
            functions: HashMap::new(),
            locations: HashMap::new(),
            samples: HashMap::new(),
            thread_key: 0,
        };
        b.string("");
        let (samples, count) = (b.string("samples"), b.string("count"));
        let (cpu, ns) = (b.string("cpu"), b.string("nanoseconds"));
        b.p.sample_type = vec![ValueType {
            r#type: samples,
            unit: count,
        }];
        b.p.period_type = Some(ValueType {
            r#type: cpu,
            unit: ns,
        });
        b.p.period = period_ns;
        b.p.time_nanos = time_nanos;
        b.thread_key = b.string("thread");
        b
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.p.string_table.len() as i64;
        self.p.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    /// One sample of a thread: frames innermost first as (function, file, line).
    #[cfg(test)]
    pub fn add(&mut self, thread: &str, frames: &[(&str, &str, Option<u32>)]) {
        self.add_n(thread, frames, 1);
    }

    /// `n` samples of a thread with the same frames.
    pub fn add_n(&mut self, thread: &str, frames: &[(&str, &str, Option<u32>)], n: i64) {
        let mut ids = Vec::with_capacity(frames.len());
        for &(name, file, line) in frames {
            let key = (name.to_string(), file.to_string());
            let fid = match self.functions.get(&key) {
                Some(&id) => id,
                None => {
                    let id = self.p.function.len() as u64 + 1;
                    let (n, f) = (self.string(name), self.string(file));
                    self.p.function.push(Function {
                        id,
                        name: n,
                        system_name: n,
                        filename: f,
                        start_line: 0,
                    });
                    self.functions.insert(key, id);
                    id
                }
            };
            let l = line.map_or(0, i64::from);
            let lid = match self.locations.get(&(fid, l)) {
                Some(&id) => id,
                None => {
                    let id = self.p.location.len() as u64 + 1;
                    self.p.location.push(Location {
                        id,
                        line: vec![Line {
                            function_id: fid,
                            line: l,
                        }],
                    });
                    self.locations.insert((fid, l), id);
                    id
                }
            };
            ids.push(lid);
        }
        let t = self.string(thread);
        match self.samples.get(&(ids.clone(), t)) {
            Some(&i) => self.p.sample[i].value[0] += n,
            None => {
                self.samples.insert((ids.clone(), t), self.p.sample.len());
                self.p.sample.push(Sample {
                    location_id: ids,
                    value: vec![n],
                    label: vec![Label {
                        key: self.thread_key,
                        str: t,
                    }],
                });
            }
        }
    }

    /// The gzipped `profile.proto`.
    pub fn write(&self, duration_ns: i64, out: &mut dyn Write) -> io::Result<()> {
        use prost::Message;
        let mut p = self.p.clone();
        p.duration_nanos = duration_ns;
        let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        gz.write_all(&p.encode_to_vec())?;
        gz.finish()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn a_profile_round_trips_through_gzip_and_protobuf() {
        let mut b = Builder::new(10_000_000, 1);
        b.add(
            "thread main (1)",
            &[("leaf", "a.py", Some(3)), ("run", "a.py", Some(9))],
        );
        b.add(
            "thread main (1)",
            &[("leaf", "a.py", Some(3)), ("run", "a.py", Some(9))],
        );
        b.add("thread w (2)", &[("run", "a.py", Some(9))]);
        let mut gz = Vec::new();
        b.write(5, &mut gz).unwrap();
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).unwrap();
        let p = Profile::decode(&raw[..]).unwrap();
        let s = |i: i64| p.string_table[i as usize].as_str();
        assert_eq!(s(0), "");
        assert_eq!(p.sample.len(), 2);
        assert_eq!(p.sample[0].value, vec![2]);
        assert_eq!(p.sample[0].location_id.len(), 2);
        let leaf = &p.location[(p.sample[0].location_id[0] - 1) as usize];
        let f = &p.function[(leaf.line[0].function_id - 1) as usize];
        assert_eq!(
            (s(f.name), s(f.filename), leaf.line[0].line),
            ("leaf", "a.py", 3)
        );
        assert_eq!(s(p.sample[1].label[0].str), "thread w (2)");
        assert_eq!((p.period, p.duration_nanos), (10_000_000, 5));
    }
}

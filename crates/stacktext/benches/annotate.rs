//! Throughput of `annotate` on a large generated DTrace trace, with a source answering from
//! a cache (a prebuilt stack): MB/s and stacks/s.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use protocol::{Frame, ThreadStack};
use stacktext::{annotate, Moment, Options, SourceError, StackSource};

struct Cached(Vec<ThreadStack>);

impl StackSource for Cached {
    fn thread_stacks(&mut self, _pid: u32) -> Result<Vec<ThreadStack>, SourceError> {
        Ok(self.0.clone())
    }
    fn resume(&mut self, _pid: u32) -> Result<(), SourceError> {
        Ok(())
    }
    fn moment(&mut self, _pid: u32, _tid: Option<u64>) -> Moment {
        Moment::Probe
    }
}

const SAMPLE: &str = include_str!("../tests/fixtures/dtrace/omnios-blog-3.10-jstack-plain.txt");
const STACKS: usize = 20_000;

fn trace() -> Vec<u8> {
    // Re-indented to DTrace's default 14 columns, one heading per record.
    let mut one = String::new();
    for l in SAMPLE.lines().skip(1) {
        one.push_str("              ");
        one.push_str(l.trim_start());
        one.push('\n');
    }
    let mut t = String::with_capacity(STACKS * (one.len() + 64));
    for i in 0..STACKS {
        t.push_str(&format!(
            "  1  246  rmdir:entry pid=4242 tid={}\n",
            1 + i % 4
        ));
        t.push_str(&one);
    }
    t.into_bytes()
}

fn source() -> Cached {
    let threads = (1..=4)
        .map(|tid| ThreadStack {
            interpreter_id: 0,
            thread_id: tid,
            os_tid: Some(tid),
            os_tid_unknown: None,
            ns_tid: None,
            name: None,
            os_name: None,
            holds_gil: None,
            state: Default::default(),
            frames: (0..8)
                .map(|i| Frame {
                    locals: None,
                    function: format!("func{i}").into(),
                    qualname: None,
                    filename: "/usr/lib/python3.10/vendor-packages/pkg/client/image.py".into(),
                    line: Some(100 + i),
                    first_line: 1,
                    entry: true,
                })
                .collect(),
        })
        .collect();
    Cached(threads)
}

fn bench(c: &mut Criterion) {
    let input = trace();
    let mut src = source();
    let opts = Options::default();
    let mut out = Vec::with_capacity(input.len() * 2);
    let mut check = || {
        out.clear();
        let s = annotate(&input[..], &mut out, &mut src, &opts).unwrap();
        assert_eq!(s.annotated as usize, STACKS);
    };
    check();
    let mut g = c.benchmark_group("dtrace");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.bench_function("bytes", |b| b.iter(&mut check));
    g.throughput(Throughput::Elements(STACKS as u64));
    g.bench_function("stacks", |b| b.iter(&mut check));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

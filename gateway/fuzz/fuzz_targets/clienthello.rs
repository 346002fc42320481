//! Any bytes, cut anywhere: the parser must never panic, never read past its input, and
//! never change its verdict once it has given an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshfed_gateway::clienthello::{Parsed, parse};

fuzz_target!(|data: &[u8]| {
    let full = parse(data);
    if let Ok(Parsed::Done { consumed, .. }) = &full {
        assert!(*consumed <= data.len());
    }
    for cut in [data.len() / 3, data.len() / 2, data.len().saturating_sub(1)] {
        if let Err(e) = parse(&data[..cut]) {
            assert_eq!(full, Err(e));
        }
    }
});

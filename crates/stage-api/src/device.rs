//! The `device` param every stage that runs the network takes (issue #5): one declaration,
//! one resource rule (a `cuda` run holds the GPU token), one check.

use crate::{Error, ParamSpec, Params, Resources, Result};

/// `device: cpu | cuda`.
pub fn device_param() -> ParamSpec {
    ParamSpec::choice("device", "cpu", &["cpu", "cuda"], "Where the network runs.")
}

/// A `cuda` run needs the GPU token.
pub fn device_resources(params: &Params) -> Resources {
    Resources {
        gpu: params.str("device") == "cuda",
    }
}

/// Fails with a clear message when the params ask for a backend this build does not have.
/// Only the CPU backend exists today.
pub fn require_available_device(params: &Params) -> Result<()> {
    if params.str("device") == "cuda" {
        return Err(Error::Config(
            "`device: cuda` needs the CUDA backend (issue #5), which this build does not have; \
             set `device: cpu`"
                .to_owned(),
        ));
    }
    Ok(())
}

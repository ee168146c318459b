//! Training for a fixed number of SGD steps: §5.2's "trained from scratch" arm, where N images
//! per class leave no validation set to anneal on. The rate drops tenfold after two thirds of
//! the steps; batches are passes over the images, each shuffled by its own stream; each step
//! is the §3 step on the paper's ten sub-crops, pipelined as [`crate::train`]'s are (the next
//! step's input is cut before this step's loss is read: the same updates as one at a time).

use engine::rng::{purpose, rng_for};
use engine::{Architecture, Backend, Network, UpdateConfig};
use rand::seq::SliceRandom;
use stage_api::{Error, Result};

use crate::data::ImageStore;
use crate::epochs::TrainingCrops;
use crate::step::{QueuedStep, queue_sgd_step, step_input};

/// The settings of a fixed-step run.
#[derive(Clone, Debug, PartialEq)]
pub struct FixedSteps {
    /// The architecture (its classifier is resized to the run's classes).
    pub architecture: Architecture,
    pub steps: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub init_std: f64,
    pub filter_rms_radius: f64,
}

/// Trains `config.architecture` with a `classes`-way classifier from a fresh initialisation
/// (keyed by `seed`) on `train`; returns the network and the mean image it subtracted.
pub fn train_fixed_steps<B: Backend>(
    backend: B,
    config: &FixedSteps,
    classes: usize,
    train: &ImageStore,
    seed: u64,
) -> Result<(Network<B>, Vec<f32>)> {
    let architecture = config.architecture.clone().with_classes(classes);
    if architecture.input_size > train.image_size {
        return Err(Error::Config(format!(
            "architecture `{}` takes {}x{} crops but the target images are {}x{}: preprocess \
             them like the pre-training set",
            architecture.name,
            architecture.input_size,
            architecture.input_size,
            train.image_size,
            train.image_size
        )));
    }
    let crop_size = architecture.input_size;
    let mut network = Network::new(backend, architecture, config.init_std, seed);
    let mean = train.mean_image();
    let batch = config.batch_size.min(train.len()).max(1);
    let anneal_at = config.steps * 2 / 3;
    let diverged = |loss: f32, step: usize| {
        Error::Numerical(format!(
            "training from scratch diverged: the loss is {loss} at step {step} of {} ({} \
             images); lower `scratch_learning_rate` or `scratch_init_std`",
            config.steps,
            train.len()
        ))
    };
    let mut order: Vec<usize> = Vec::new();
    let mut pass = 0u64;
    let mut in_flight: Option<(usize, QueuedStep<B>)> = None;
    for step in 0..config.steps {
        if order.len() < batch {
            // A new pass over the images, shuffled by its own stream.
            let mut next: Vec<usize> = (0..train.len()).collect();
            next.shuffle(&mut rng_for(&[seed, purpose::SHUFFLE, pass]));
            pass += 1;
            order.extend(next);
        }
        let indices: Vec<usize> = order.drain(..batch).collect();
        let learning_rate = if step < anneal_at {
            config.learning_rate
        } else {
            config.learning_rate * 0.1
        };
        let update = UpdateConfig {
            learning_rate,
            momentum: config.momentum,
            weight_decay: config.weight_decay,
            filter_rms_radius: config.filter_rms_radius,
        };
        let key = [seed, pass, step as u64];
        let (input, labels) = step_input(
            &network.backend,
            train,
            &indices,
            &mean,
            crop_size,
            TrainingCrops::Ten,
            key,
        );
        if let Some((done, queued)) = in_flight.take() {
            let outcome = queued.finish(&network);
            tracing::debug!(step = done, loss = outcome.loss, "fixed step");
            if !outcome.loss.is_finite() {
                return Err(diverged(outcome.loss, done));
            }
        }
        in_flight = Some((
            step,
            queue_sgd_step(&mut network, input, labels, key, &update),
        ));
    }
    if let Some((done, queued)) = in_flight {
        let outcome = queued.finish(&network);
        if !outcome.loss.is_finite() {
            return Err(diverged(outcome.loss, done));
        }
    }
    Ok((network, mean))
}

#[cfg(test)]
mod tests {
    use engine::CpuBackend;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::step::sgd_step;

    /// 12 noisy 32x32 images of 3 classes.
    fn store() -> ImageStore {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let n = 12;
        ImageStore {
            image_size: 32,
            pixels: (0..n * 32 * 32 * 3).map(|_| rng.random()).collect(),
            labels: (0..n).map(|i| i % 3).collect(),
            image_ids: (0..n as i64).collect(),
            class_names: vec!["a".into(), "b".into(), "c".into()],
        }
    }

    /// The pipelined fixed-step run gives bit for bit the weights of the same steps taken one
    /// at a time (the loop the transfer stage had), so moving it changed no result.
    #[test]
    fn the_pipelined_run_equals_its_steps_taken_one_at_a_time() {
        let train = store();
        let config = FixedSteps {
            architecture: Architecture::from_name("zf_small", 3).unwrap(),
            steps: 7,
            batch_size: 5,
            learning_rate: 0.01,
            momentum: 0.9,
            weight_decay: 5e-4,
            init_std: 0.03,
            filter_rms_radius: 0.1,
        };
        let (pipelined, mean) = train_fixed_steps(CpuBackend, &config, 3, &train, 11).unwrap();

        let mut network = Network::new(CpuBackend, config.architecture.clone(), 0.03, 11);
        let (mut order, mut pass) = (Vec::new(), 0u64);
        for step in 0..config.steps {
            if order.len() < 5 {
                let mut next: Vec<usize> = (0..train.len()).collect();
                next.shuffle(&mut rng_for(&[11, purpose::SHUFFLE, pass]));
                pass += 1;
                order.extend(next);
            }
            let indices: Vec<usize> = order.drain(..5).collect();
            let update = UpdateConfig {
                learning_rate: if step < 4 { 0.01 } else { 0.001 },
                momentum: 0.9,
                weight_decay: 5e-4,
                filter_rms_radius: 0.1,
            };
            let key = [11, pass, step as u64];
            sgd_step(
                &mut network,
                &train,
                &indices,
                &mean,
                TrainingCrops::Ten,
                key,
                &update,
            );
        }
        for (a, b) in pipelined.params.iter().zip(&network.params) {
            assert!(a.weight == b.weight && a.bias == b.bias, "{}", a.name);
        }
    }
}

//! A model's weights in a Hugging Face directory: `model.safetensors`, or the shards that
//! `model.safetensors.index.json` maps every tensor to.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::Value;

use crate::file::{SafeTensors, TensorInfo};
use crate::{Result, SafetensorsError};

/// The index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The one file of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The largest index file read (real ones are well under 1 MiB).
const MAX_INDEX_BYTES: u64 = 64 << 20;

/// Every tensor of a checkpoint, over one or more opened files.
#[derive(Debug)]
pub struct Checkpoint {
    files: Vec<SafeTensors>,
    /// Tensor name → (file, position in that file's list), in name order.
    names: BTreeMap<String, (usize, usize)>,
}

impl Checkpoint {
    /// Opens the checkpoint in `dir`: the shards of [`INDEX_FILE`] when present, else
    /// [`SINGLE_FILE`]. With an index, every tensor it maps must be in its shard, and every
    /// tensor of a shard must be mapped to that shard.
    pub fn open_dir(dir: &Path) -> Result<Checkpoint> {
        let index = dir.join(INDEX_FILE);
        if index.is_file() {
            return open_sharded(dir, &index);
        }
        let single = dir.join(SINGLE_FILE);
        if !single.is_file() {
            return Err(SafetensorsError::Io {
                action: "find the weights",
                path: dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("neither {SINGLE_FILE} nor {INDEX_FILE} is there"),
                ),
            });
        }
        Ok(Checkpoint::from_files(vec![SafeTensors::open(single)?]))
    }

    /// A checkpoint of already opened files; a tensor in two of them is kept from the first.
    pub fn from_files(files: Vec<SafeTensors>) -> Checkpoint {
        let mut names = BTreeMap::new();
        for (f, file) in files.iter().enumerate() {
            for (i, t) in file.tensors().iter().enumerate() {
                names.entry(t.name.clone()).or_insert((f, i));
            }
        }
        Checkpoint { files, names }
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.keys().map(String::as_str)
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        let &(f, i) = self.names.get(name)?;
        Some(&self.files[f].tensors()[i])
    }

    /// The bytes of the tensor called `name`.
    pub fn data(&self, name: &str) -> Option<&[u8]> {
        let &(f, i) = self.names.get(name)?;
        Some(self.files[f].data(&self.files[f].tensors()[i]))
    }

    /// The opened files.
    pub fn files(&self) -> &[SafeTensors] {
        &self.files
    }
}

fn open_sharded(dir: &Path, index: &Path) -> Result<Checkpoint> {
    let shown = index.display().to_string();
    let err = |problem: String| SafetensorsError::Index {
        index: shown.clone(),
        problem,
    };
    // A weight map is 2 deep; serde_json's own recursion limit (128) bounds the rest.
    let json = crate::read_json(index, MAX_INDEX_BYTES)?
        .ok_or_else(|| err("is not a file".to_string()))?;
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| err("has no \"weight_map\" object".to_string()))?;
    // Shard file name → index in `files`, in first-seen order.
    let mut shard_ids: HashMap<String, usize> = HashMap::new();
    let mut wanted: Vec<(String, usize)> = Vec::with_capacity(map.len());
    for (tensor, shard) in map {
        let shard = shard
            .as_str()
            .ok_or_else(|| err(format!("weight_map.{tensor} is not a file name")))?;
        let plain = Path::new(shard).file_name().is_some_and(|n| n == shard);
        if !plain || !shard.ends_with(".safetensors") {
            return Err(err(format!(
                "weight_map.{tensor} = {shard:?} is not a .safetensors file in the same directory"
            )));
        }
        let n = shard_ids.len();
        let id = *shard_ids.entry(shard.to_string()).or_insert(n);
        wanted.push((tensor.clone(), id));
    }
    let mut shards: Vec<(usize, &String)> = shard_ids.iter().map(|(s, &i)| (i, s)).collect();
    shards.sort();
    let files = shards
        .iter()
        .map(|(_, s)| SafeTensors::open(dir.join(s)))
        .collect::<Result<Vec<_>>>()?;
    let mut names = BTreeMap::new();
    for (tensor, id) in wanted {
        let Some(i) = files[id].tensors().iter().position(|t| t.name == tensor) else {
            return Err(err(format!(
                "maps tensor '{tensor}' to {}, which does not hold it",
                files[id].name()
            )));
        };
        names.insert(tensor, (id, i));
    }
    for file in &files {
        if let Some(t) = file.tensors().iter().find(|t| {
            names
                .get(&t.name)
                .is_none_or(|&(f, _)| files[f].name() != file.name())
        }) {
            return Err(err(format!(
                "{} holds tensor '{}', which the weight map does not map to it",
                file.name(),
                t.name
            )));
        }
    }
    Ok(Checkpoint { files, names })
}

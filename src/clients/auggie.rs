//! Auggie (Augment's CLI): `~/.augment/settings.json`; it documents no project file and no
//! tool timeout.

use super::json::{JsonClient, Shape};

pub const AUGGIE: JsonClient = JsonClient {
    id: "auggie",
    name: "Auggie",
    program: "auggie",
    dir: ".augment",
    file: "settings.json",
    project_scope: false,
    shape: Shape::PLAIN,
};

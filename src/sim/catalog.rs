//! What the simulated account offers: sizes, regions, images, SSH keys and VPCs.

use crate::digitalocean::types::{Image, Region, Size, SshKey, Vpc};

/// (slug, vcpus, memory MiB, disk GiB, monthly USD)
const SIZES: &[(&str, u32, u64, u64, f64)] = &[
    ("s-1vcpu-1gb", 1, 1024, 25, 6.0),
    ("s-1vcpu-2gb", 1, 2048, 50, 12.0),
    ("s-2vcpu-2gb", 2, 2048, 60, 18.0),
    ("s-2vcpu-4gb", 2, 4096, 80, 24.0),
    ("s-4vcpu-8gb", 4, 8192, 160, 48.0),
    ("c-2", 2, 4096, 25, 42.0),
    ("c-4", 4, 8192, 50, 84.0),
    ("g-2vcpu-8gb", 2, 8192, 25, 63.0),
];

/// Region slugs; every size is offered everywhere except `g-2vcpu-8gb` in `sgp1`.
const REGIONS: &[(&str, &str)] = &[
    ("nyc1", "New York 1"),
    ("nyc3", "New York 3"),
    ("sfo3", "San Francisco 3"),
    ("ams3", "Amsterdam 3"),
    ("fra1", "Frankfurt 1"),
    ("lon1", "London 1"),
    ("sgp1", "Singapore 1"),
    ("tor1", "Toronto 1"),
];

/// (id, slug, name, distribution)
const IMAGES: &[(u64, &str, &str, &str)] = &[
    (160_000_001, "ubuntu-24-04-x64", "24.04 (LTS) x64", "Ubuntu"),
    (160_000_002, "ubuntu-22-04-x64", "22.04 (LTS) x64", "Ubuntu"),
    (160_000_003, "debian-12-x64", "12 x64", "Debian"),
    // The Marketplace's Docker image, which the Drone and GitLab examples use.
    (
        160_000_004,
        "docker-20-04",
        "Docker on Ubuntu 20.04",
        "Ubuntu",
    ),
];

/// The one SSH key of the simulated account (the example configuration's).
pub const SSH_KEY: (u64, &str) = (289_794, "3b:16:bf:e4:8b:00:8b:b8:59:8c:a9:d3:f0:19:45:fa");

fn offered(size: &str, region: &str) -> bool {
    !(size == "g-2vcpu-8gb" && region == "sgp1")
}

/// Every size.
pub fn sizes() -> Vec<Size> {
    SIZES
        .iter()
        .map(|(slug, vcpus, memory, disk, monthly)| Size {
            slug: slug.to_string(),
            memory: *memory,
            vcpus: *vcpus,
            disk: *disk,
            transfer: 1.0,
            price_monthly: *monthly,
            price_hourly: (monthly / 672.0 * 10_000.0).round() / 10_000.0,
            regions: REGIONS
                .iter()
                .filter(|(region, _)| offered(slug, region))
                .map(|(region, _)| region.to_string())
                .collect(),
            available: true,
            description: "Simulated".into(),
        })
        .collect()
}

/// One size by slug.
pub fn size(slug: &str) -> Option<Size> {
    sizes().into_iter().find(|s| s.slug == slug)
}

/// Every region.
pub fn regions() -> Vec<Region> {
    REGIONS
        .iter()
        .map(|(slug, name)| Region {
            slug: slug.to_string(),
            name: name.to_string(),
            sizes: SIZES
                .iter()
                .filter(|(size, ..)| offered(size, slug))
                .map(|(size, ..)| size.to_string())
                .collect(),
            available: true,
            features: vec![
                "backups".into(),
                "ipv6".into(),
                "metadata".into(),
                "install_agent".into(),
            ],
        })
        .collect()
}

/// One region by slug.
pub fn region(slug: &str) -> Option<Region> {
    regions().into_iter().find(|r| r.slug == slug)
}

/// One image by id or slug.
pub fn image(key: &str) -> Option<Image> {
    IMAGES
        .iter()
        .find(|(id, slug, ..)| *slug == key || id.to_string() == key)
        .map(|(id, slug, name, distribution)| Image {
            id: *id,
            name: name.to_string(),
            slug: Some(slug.to_string()),
            distribution: distribution.to_string(),
            regions: REGIONS.iter().map(|(r, _)| r.to_string()).collect(),
            status: "available".into(),
        })
}

/// One SSH key by id or fingerprint.
pub fn ssh_key(key: &str) -> Option<SshKey> {
    (key == SSH_KEY.1 || key == SSH_KEY.0.to_string()).then(|| SshKey {
        id: SSH_KEY.0,
        fingerprint: SSH_KEY.1.to_string(),
        name: "simulated".into(),
    })
}

/// The default VPC of a region: a fixed UUID per region.
pub fn default_vpc_id(region: &str) -> String {
    let index = REGIONS.iter().position(|(r, _)| *r == region).unwrap_or(0);
    format!("5a4981aa-9653-4bd1-bef5-d6bff52{:05x}", index)
}

/// One VPC by id.
pub fn vpc(id: &str) -> Option<Vpc> {
    REGIONS
        .iter()
        .find(|(region, _)| default_vpc_id(region) == id)
        .map(|(region, _)| Vpc {
            id: id.to_string(),
            name: format!("default-{region}"),
            region: region.to_string(),
        })
}

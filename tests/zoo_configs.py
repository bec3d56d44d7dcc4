"""Tiny configurations of the large zoo architectures, for tests that run forwards in seconds."""

TINY_LARGE = {
    "edsr": dict(n_resblocks=2, n_feats=8),
    "edsr-baseline": dict(n_resblocks=2, n_feats=8),
    "edsr-t": dict(n_resblocks=1, n_feats=8),
    "rcan": dict(n_resgroups=2, n_resblocks=2, n_feats=16, reduction=4),
    "rcan-t": dict(n_resgroups=1, n_resblocks=2, n_feats=16, reduction=4),
    "rnan": dict(n_resgroups=3, n_feats=8),
    "rnan-t": dict(n_feats=8),
    "san": dict(n_resgroups=2, n_resblocks=1, n_feats=16, reduction=4),
    "rrdbnet": dict(num_feat=8, num_block=1, num_grow_ch=4),
    "msrresnet": dict(num_feat=8, num_block=2),
    "swinir": dict(img_size=16, embed_dim=12, depths=(2, 2), num_heads=(2, 2)),
    "swinir-light": dict(img_size=16, embed_dim=12, depths=(2,), num_heads=(3,)),
}

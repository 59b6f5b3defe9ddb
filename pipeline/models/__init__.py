"""The diffusion models: references resolved, pipelines loaded, images generated, tiny models built.

Owns every model reference the project accepts (a hub id, a local diffusers directory, `tiny/<family>`,
`tiny/<family>-pretrained`) and the one way to load it. Modules:
- `refs`: the names alone (families, hub ids, `tiny/...`, the cache directory), importing no model library;
- `zoo`: `resolve_pretrained`, `detect_family`, and the embedded tiny models (built once into the local cache);
- `diffusion`: `load_pipeline` and `generate` (images together with their final latents);
- `architectures`: tiny and full-size architectures of SD1.5, SD2.1 and SDXL with random weights;
- `clip_tokenizer`: the real CLIP tokenizer written offline from open_clip's BPE file;
- `pretrain` and `synthetic`: the brief pre-training of the tiny UNet on the project's own synthetic images.
"""

"""The embedded demo dataset: procedural foot photos with planted problems and ground truth
(`curate.demo.generate.generate_demo`)."""

"""What a command runs, opened: any zoo name, factory, .onnx file or built artifact -> a Runner with its model's
facts (resolve.py), the runners bench times (bench.py), and `--backend auto`'s measured choice on a CPU (race.py)."""

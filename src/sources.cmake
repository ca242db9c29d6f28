# The sources of each library of src/, relative to src/: the one list that src/CMakeLists.txt
# and the clang fuzz build (tests/fuzz) both read. The layers, bottom up (each may use those
# below it, never those above; src/CMakeLists.txt declares the links, tests/check_layering.py
# holds every #include to them):
#   core       errors, dtypes, the quantization codec, clock, checksums, mapped files
#   arch       ModelConfig: the four architectures' hyper-parameters
#   weights    the weight format: shard layout, HDF5, model directories, writer, HF import
#   tokenizer  tokenizer.json pipelines (the ids of Hugging Face tokenizers)
#   backend    the compute backend interface and the CPU backend
#   model      the decoder (attention, routers, dense parts) over a backend
#   comm       ranks, bounded waits, the message protocol (MPI)
#   store      the expert store: shards exposed as RMA windows, placement (MPI)
#   sched      pure policy: which expert goes where and when (no MPI)
#   predict    predictors, the shadow model, the prediction ledger (no MPI)
#   exec       the roles of a distributed run: main's executor, expert rank, predictor rank
#   runtime    the engine (one process or a job), generation loop, sampler, perplexity
#   sim        the schedule simulator
set(ODMOE_SOURCES_core
  core/error.cpp core/dtype.cpp core/checksum.cpp core/mapped_file.cpp core/progress.cpp core/memory_stats.cpp
  core/clock.cpp core/tensor_codec.cpp core/json_file.cpp)
set(ODMOE_SOURCES_arch arch/model_config.cpp)
set(ODMOE_SOURCES_weights
  weights/shard_layout.cpp weights/h5_file.cpp weights/model_files.cpp weights/safetensors.cpp
  weights/hf_checkpoint.cpp weights/model_writer.cpp weights/synth.cpp)
set(ODMOE_SOURCES_tokenizer
  tokenizer/unicode.cpp tokenizer/unicode_norm.cpp tokenizer/regex.cpp tokenizer/normalized_string.cpp tokenizer/bpe.cpp
  tokenizer/pipeline.cpp tokenizer/decoder.cpp tokenizer/tokenizer.cpp)
set(ODMOE_SOURCES_backend backend/device.cpp backend/open_device.cpp backend/cpu/cpu_device.cpp
  backend/cpu/cpu_backend.cpp backend/cpu/cpu_kernels_scalar.cpp backend/cpu/cpu_kernels_x86.cpp
  backend/cpu/cpu_qdot_scalar.cpp backend/cpu/cpu_qdot_avx2.cpp backend/cpu/cpu_qdot_avx512.cpp
  backend/cpu/cpu_attention.cpp backend/cpu/cpu_attention_avx2.cpp backend/cpu/cpu_attention_avx512.cpp)
set(ODMOE_SOURCES_model model/model.cpp model/experts.cpp)
set(ODMOE_SOURCES_comm comm/comm.cpp comm/protocol.cpp)
set(ODMOE_SOURCES_store store/expert_store.cpp)
set(ODMOE_SOURCES_sched sched/schedule.cpp sched/expert_cache.cpp sched/load_planner.cpp)
set(ODMOE_SOURCES_predict predict/predictor.cpp predict/prediction_ledger.cpp predict/shadow.cpp predict/fallback.cpp)
set(ODMOE_SOURCES_exec
  exec/options.cpp exec/stats.cpp exec/trace.cpp exec/executor.cpp exec/executor_end.cpp exec/expert_rank.cpp exec/predictor_rank.cpp)
set(ODMOE_SOURCES_runtime runtime/sampler.cpp runtime/perplexity.cpp runtime/generation.cpp runtime/engine.cpp)
set(ODMOE_SOURCES_sim sim/sim_config.cpp sim/schedule_sim.cpp sim/sim_inputs.cpp)

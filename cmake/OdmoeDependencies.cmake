# Everything the project links against. Debian 12 package names are in .ci/install-deps.
find_package(Threads REQUIRED)
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(MPI REQUIRED COMPONENTS C)
find_package(HDF5 REQUIRED COMPONENTS C)
find_package(Boost 1.71 REQUIRED COMPONENTS program_options)
find_package(nlohmann_json 3.9 REQUIRED)

if(HDF5_IS_PARALLEL)
  message(STATUS "HDF5: the parallel flavour was found; odmoe uses the serial API only")
endif()

# HDF5's CMake variables are not a target; wrap them once.
add_library(odmoe_hdf5 INTERFACE)
target_include_directories(odmoe_hdf5 SYSTEM INTERFACE ${HDF5_C_INCLUDE_DIRS} ${HDF5_INCLUDE_DIRS})
target_link_libraries(odmoe_hdf5 INTERFACE ${HDF5_C_LIBRARIES})
target_compile_definitions(odmoe_hdf5 INTERFACE ${HDF5_C_DEFINITIONS} ${HDF5_DEFINITIONS})

if(ODMOE_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()

# Only the MPI C API is used; keep Open MPI's deprecated C++ bindings out of every TU.
target_compile_definitions(MPI::MPI_C INTERFACE OMPI_SKIP_MPICXX=1 MPICH_SKIP_MPICXX=1)
